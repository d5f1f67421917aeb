//! systemd readiness notification (`Type=notify`): `READY=1`, `RELOADING=1`, `STOPPING=1` sent to
//! `$NOTIFY_SOCKET` when it is set, and nothing at all otherwise.

use std::os::unix::net::UnixDatagram;

/// Sends one notification; failures are ignored (the daemon works the same without systemd).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}
