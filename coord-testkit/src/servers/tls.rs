//! Throw-away TLS material (a CA, a server certificate and a client certificate) made at
//! test time with `rcgen`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::FixtureError;

/// The common name of the generated client certificate.
pub const CLIENT_COMMON_NAME: &str = "coord-test-client";

/// A fresh CA plus a server certificate (valid for `127.0.0.1`, `::1` and `localhost`)
/// and a client certificate signed by it, as PEM text and as files in a directory.
///
/// The server certificate carries both the server-auth and the client-auth extended key
/// usage, because etcd's gRPC gateway dials etcd itself with the server certificate when
/// client certificate authentication is on.
#[derive(Clone)]
pub struct TlsMaterial {
    dir: PathBuf,
    ca_cert_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn tls_err(e: impl std::fmt::Display) -> FixtureError {
    FixtureError::Tls(e.to_string())
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "coord-testkit");
    dn
}

impl TlsMaterial {
    /// Generates the material and writes `ca.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem` and `client-key.pem` into `dir` (created if missing).
    ///
    /// # Errors
    ///
    /// [`FixtureError::Tls`] if generation fails, [`FixtureError::Io`] if writing fails.
    pub fn generate(dir: &Path) -> Result<Self, FixtureError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.distinguished_name = name("coord-testkit test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;

        let mut server_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .map_err(tls_err)?;
        server_params.distinguished_name = name("coord-testkit server");
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_key = KeyPair::generate().map_err(tls_err)?;
        let server_cert = server_params.signed_by(&server_key, &ca).map_err(tls_err)?;

        let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        client_params.distinguished_name = name(CLIENT_COMMON_NAME);
        client_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(tls_err)?;
        let client_cert = client_params.signed_by(&client_key, &ca).map_err(tls_err)?;

        let me = Self {
            dir: dir.to_path_buf(),
            ca_cert_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| FixtureError::io(format!("creating {}", dir.display()), e))?;
        for (path, pem) in [
            (me.ca_cert_path(), &me.ca_cert_pem),
            (me.server_cert_path(), &me.server_cert_pem),
            (me.server_key_path(), &me.server_key_pem),
            (me.client_cert_path(), &me.client_cert_pem),
            (me.client_key_path(), &me.client_key_pem),
        ] {
            std::fs::write(&path, pem)
                .map_err(|e| FixtureError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(me)
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Path of the CA certificate (`ca.pem`).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// Path of the server certificate (`server.pem`).
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// Path of the server private key (`server-key.pem`, PKCS#8).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// Path of the client certificate (`client.pem`, CN [`CLIENT_COMMON_NAME`]).
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    /// Path of the client private key (`client-key.pem`, PKCS#8).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }
    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }
    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }
    /// The server private key, PEM.
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }
    /// The client certificate, PEM.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }
    /// The client private key, PEM.
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }
    /// The client certificate's common name.
    pub fn client_common_name(&self) -> &str {
        CLIENT_COMMON_NAME
    }
}
