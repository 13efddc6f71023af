//! What the examples share.

/// `--backend URL` (or `COORD_BACKEND`), default `memory://`.
pub(crate) fn backend_url() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--backend" {
            return args.next().expect("--backend needs a URL");
        }
    }
    std::env::var("COORD_BACKEND").unwrap_or_else(|_| "memory://".to_owned())
}
