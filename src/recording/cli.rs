//! The operator's commands for recordings, keys and the audit log:
//!
//! ```text
//! srtp-edge recording list|verify ID…|export ID --wav OUT [--partial]|shred ID…|rewrap [ID…|--all]
//! srtp-edge audit verify
//! srtp-edge keys list|rotate --class recordings --tenant T [--provider P]
//! ```
//!
//! Every key use is logged in the audit log as `cli:<user>(uid N)`. Exit status: 0 done,
//! 1 a recording or the log failed a check (or an operation failed), 2 a bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::store;
use crate::config::Config;
use crate::keys::{audit, Actor, DataClass, Keys, Scope};

/// Where the configuration is (the daemon's, for the state directory, recordings and keys).
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file (TOML); without it, the embedded default.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// `srtp-edge recording …`
#[derive(Subcommand, Debug, Clone)]
pub enum RecordingCmd {
    /// List recordings: id, start, tenant, codec, KEK, size, state. Decrypts nothing.
    List,
    /// Decrypt and check recordings end to end (key, every chunk, order, final chunk).
    Verify {
        /// Recording ids (or id prefixes, or paths).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Write a recording as a stereo WAV (caller left, callee right).
    Export {
        /// Recording id (or prefix, or path).
        id: String,
        /// The WAV file to write (created 0600).
        #[arg(long, value_name = "OUT")]
        wav: PathBuf,
        /// Export the chunks before a damaged or missing part instead of refusing.
        #[arg(long)]
        partial: bool,
    },
    /// Crypto-shred recordings: destroy their data keys; the audio becomes unreadable noise.
    Shred {
        /// Recording ids (or prefixes, or paths).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also delete the files.
        #[arg(long)]
        delete: bool,
    },
    /// Re-wrap data keys with the newest KEK version (after `keys rotate`); audio untouched.
    Rewrap {
        /// Recording ids (or prefixes, or paths); none with --all.
        ids: Vec<String>,
        /// Every recording in the directory.
        #[arg(long)]
        all: bool,
    },
}

/// `srtp-edge audit …`
#[derive(Subcommand, Debug, Clone)]
pub enum AuditCmd {
    /// Check the hash chain of the key audit log (a removed or altered entry fails).
    Verify,
}

/// `srtp-edge keys …`
#[derive(Subcommand, Debug, Clone)]
pub enum KeysCmd {
    /// KEK versions per provider, class and tenant, with their ages (never key material).
    List,
    /// Create the next KEK version of a class and tenant; new objects use it from now on.
    Rotate {
        /// `recordings` or `call-state`.
        #[arg(long, default_value = "recordings")]
        class: String,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The provider (default: `[recording] key_provider`).
        #[arg(long)]
        provider: Option<String>,
    },
}

fn load(c: &ConfigArg) -> Result<Config, ExitCode> {
    match &c.config {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded_default()),
    }
    .map_err(|errs| {
        for e in &errs.0 {
            eprintln!("srtp-edge: config: {e}");
        }
        ExitCode::from(2)
    })
}

fn keys(cfg: &Config) -> Result<Keys, ExitCode> {
    Keys::open(&cfg.keys, &cfg.state_dir, Actor::cli_user()).map_err(|e| {
        eprintln!("srtp-edge: keys: {e}");
        ExitCode::from(1)
    })
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("srtp-edge: {msg}");
    ExitCode::from(1)
}

fn unix_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Runs `srtp-edge recording …`.
pub fn recording(c: &ConfigArg, cmd: &RecordingCmd) -> ExitCode {
    let cfg = match load(c) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let dir = cfg.recording.directory_in(&cfg.state_dir);
    if let RecordingCmd::List = cmd {
        return match store::list(&dir) {
            Ok(l) => {
                println!(
                    "{:<32}  {:<20}  {:<10}  {:<5}  {:<28}  {:>10}  state",
                    "id", "start", "tenant", "codec", "kek", "bytes"
                );
                for r in l {
                    println!(
                        "{:<32}  {:<20}  {:<10}  {:<5}  {:<28}  {:>10}  {}",
                        r.id,
                        unix_time(r.start_unix_ms),
                        r.tenant,
                        r.codec,
                        r.kek,
                        r.bytes,
                        r.state
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let keys = match keys(&cfg) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let paths = |ids: &[String]| -> Result<Vec<PathBuf>, ExitCode> {
        ids.iter()
            .map(|i| store::resolve(&dir, i).map_err(fail))
            .collect()
    };
    match cmd {
        RecordingCmd::List => ExitCode::SUCCESS,
        RecordingCmd::Verify { ids } => {
            let ps = match paths(ids) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let mut bad = false;
            for p in ps {
                match store::verify(&keys, &p) {
                    Ok(v) => println!(
                        "{}: ok ({} chunks, {} frames, {:.1} s)",
                        p.display(),
                        v.chunks,
                        v.frames,
                        f64::from(v.duration_ms) / 1000.0
                    ),
                    Err(e) => {
                        bad = true;
                        println!("{}: FAILED: {e}", p.display());
                    }
                }
            }
            if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        RecordingCmd::Export { id, wav, partial } => {
            let p = match store::resolve(&dir, id) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match store::export_wav(&keys, &p, wav, *partial) {
                Ok(v) => {
                    println!(
                        "{}: {} frames, {:.1} s -> {}",
                        p.display(),
                        v.frames,
                        f64::from(v.duration_ms) / 1000.0,
                        wav.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{}: {e}", p.display())),
            }
        }
        RecordingCmd::Shred { ids, delete } => {
            let ps = match paths(ids) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let mut code = ExitCode::SUCCESS;
            for p in ps {
                let r = store::shred(&keys, &p, "operator").and_then(|_| {
                    if *delete {
                        std::fs::remove_file(&p).map_err(|e| e.to_string())
                    } else {
                        Ok(())
                    }
                });
                match r {
                    Ok(()) => println!(
                        "{}: shredded{}",
                        p.display(),
                        if *delete { " and deleted" } else { "" }
                    ),
                    Err(e) => code = fail(format!("{}: {e}", p.display())),
                }
            }
            code
        }
        RecordingCmd::Rewrap { ids, all } => {
            let ps = if *all {
                match store::list(&dir) {
                    Ok(l) => l
                        .into_iter()
                        .filter(|r| r.state == "sealed")
                        .map(|r| r.path)
                        .collect(),
                    Err(e) => return fail(e),
                }
            } else {
                match paths(ids) {
                    Ok(p) => p,
                    Err(e) => return e,
                }
            };
            let mut code = ExitCode::SUCCESS;
            for p in ps {
                match store::rewrap(&keys, &p) {
                    Ok(true) => println!("{}: re-wrapped", p.display()),
                    Ok(false) => println!("{}: already under the newest KEK", p.display()),
                    Err(e) => code = fail(format!("{}: {e}", p.display())),
                }
            }
            code
        }
    }
}

/// Runs `srtp-edge audit …`.
pub fn audit(c: &ConfigArg, cmd: &AuditCmd) -> ExitCode {
    let cfg = match load(c) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let AuditCmd::Verify = cmd;
    let path = cfg.keys.audit_log_in(&cfg.state_dir);
    match audit::verify(&path) {
        Ok(v) => {
            println!(
                "{}: ok ({} entries, chain intact)",
                path.display(),
                v.entries
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: FAILED: {e}", path.display())),
    }
}

/// Runs `srtp-edge keys …`.
pub fn keys_cmd(c: &ConfigArg, cmd: &KeysCmd) -> ExitCode {
    let cfg = match load(c) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let keys = match keys(&cfg) {
        Ok(k) => k,
        Err(e) => return e,
    };
    match cmd {
        KeysCmd::List => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for (name, kind, list) in keys.list() {
                println!("provider {name} ({kind})");
                for k in list {
                    println!(
                        "  {name}:{}/v{}  created {}  age {} days",
                        k.scope,
                        k.version,
                        unix_time(k.created_unix * 1000),
                        now.saturating_sub(k.created_unix) / 86_400
                    );
                }
            }
            ExitCode::SUCCESS
        }
        KeysCmd::Rotate {
            class,
            tenant,
            provider,
        } => {
            let Some(class) = DataClass::parse(class) else {
                return fail(format!(
                    "{class:?} is not a data class (recordings, call-state)"
                ));
            };
            let scope = match Scope::new(class, tenant) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let p = provider
                .clone()
                .unwrap_or_else(|| cfg.recording.key_provider.clone());
            match keys.rotate(&p, &scope) {
                Ok(i) => {
                    println!("{p}:{}/v{} created", i.scope, i.version);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
