//! The `srtp-edge` binary: command line, configuration and the IO shell around the library.

fn main() {
    println!("srtp-edge {}", env!("CARGO_PKG_VERSION"));
}
