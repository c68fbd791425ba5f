//! The TLS crypto provider, installed once for the whole process.
//!
//! reqwest is one crate for the whole dependency graph: driftwatch's webhook
//! client and the OTLP/HTTP exporter's blocking client both build on it with
//! rustls and *no* built-in provider (so neither OpenSSL nor aws-lc, with
//! their C toolchains, is needed). rustls then requires a process-wide
//! provider before any client is built, or building one panics. Every place
//! that builds an HTTP client calls [`ensure_crypto_provider`] first; it is
//! idempotent and cheap.

/// Installs rustls' ring provider as the process default (once).
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed: fine either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_can_be_built_after_the_provider_is_installed() {
        super::ensure_crypto_provider();
        super::ensure_crypto_provider();
        assert!(reqwest::Client::builder().build().is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
