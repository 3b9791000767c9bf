//! TLS for the listener: rustls with ALPN (`h2`, then `http/1.1`, so gRPC works over TLS), and
//! a certificate that is read again on SIGHUP or when its files change, without a restart and
//! without dropping a connection. A reload that fails (a half-written file, a key that does
//! not match) keeps the certificate in use and logs why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where the certificate chain and its private key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }

    /// Reads and checks both files: the key must match the leaf certificate. Errors name the
    /// file, never its content.
    fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let provider = ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        Ok(Arc::new(certified))
    }
}

/// The certificate the listener presents, swapped in place by [`ReloadingCert::reload`].
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ReloadingCert {
    /// Loads the files; an error names what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let seen = files.modified();
        let current = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(current),
            seen: Mutex::new(seen),
        }))
    }

    /// Reads the files again and swaps the certificate in; on an error the one in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let seen = self.files.modified();
        let fresh = self.files.load()?;
        *self.current.write() = fresh;
        *self.seen.lock() = seen;
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = self.files.modified();
        if now.is_none() || now == *self.seen.lock() {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The rustls configuration of the listener: this certificate, ALPN `h2` and `http/1.1`,
    /// TLS 1.2 and 1.3 with rustls' safe defaults, no client certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads on SIGHUP and when the files change (checked every `every`), until the
    /// process ends. Each reload is logged, with its error if it failed.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<()>();
                let outcome = tokio::select! {
                    () = signal => self.reload().map(|()| "SIGHUP"),
                    _ = tick.tick() => match self.reload_if_changed() {
                        Ok(true) => Ok("the files changed"),
                        Ok(false) => continue,
                        Err(e) => Err(e),
                    },
                };
                match outcome {
                    Ok(why) => tracing::info!(reason = why, "TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_new(dir: &std::path::Path, when: SystemTime) -> (TlsFiles, Vec<u8>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.key_pair.serialize_pem()).unwrap();
        for path in [&files.cert, &files.key] {
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(when).unwrap();
        }
        (files, made.cert.der().to_vec())
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().cert[0].to_vec()
    }

    #[test]
    fn a_change_of_the_files_is_picked_up_and_nothing_else_reloads() {
        let dir = std::env::temp_dir().join(format!("otp-sms-tls-unit-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let start = SystemTime::now() - Duration::from_secs(60);
        let (files, first) = write_new(&dir, start);
        let cert = ReloadingCert::load(files).unwrap();
        assert_eq!(served(&cert), first);
        assert_eq!(cert.reload_if_changed(), Ok(false), "unchanged files");

        let (_, second) = write_new(&dir, start + Duration::from_secs(30));
        assert_eq!(cert.reload_if_changed(), Ok(true));
        assert_eq!(served(&cert), second);

        // A half-written key: refused, the second certificate stays.
        std::fs::write(dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert_eq!(served(&cert), second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
