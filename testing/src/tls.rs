//! [`TestCa`]: a throwaway certificate authority with a server and a client certificate,
//! generated in memory at test time so no key material is ever committed.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A fresh CA (ECDSA P-256) that signed one server certificate (SAN `127.0.0.1` and
/// `localhost`, extended key usage server auth) and one client certificate (CN
/// `svckit-test-client`, extended key usage client auth). Everything is PEM.
///
/// ```
/// # #[cfg(feature = "tls")] {
/// let ca = svckit_testing::tls::TestCa::new();
/// assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// # }
/// ```
pub struct TestCa {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of test logs.
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Generates the CA and both certificates.
    ///
    /// # Panics
    /// When key generation or signing fails (it does not with the built-in parameters).
    pub fn new() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("no SAN is valid");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "svckit test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let ca_pem = ca.self_signed(&ca_key).expect("self-sign the CA").pem();
        let issuer = Issuer::new(ca, ca_key);

        let server = leaf(
            &issuer,
            "127.0.0.1",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &issuer,
            "svckit-test-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Self {
            ca_pem,
            server,
            client,
        }
    }

    /// The CA certificate (PEM): what clients trust and what etcd checks client certificates
    /// against.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM), valid for `127.0.0.1` and `localhost`.
    pub fn server_cert_pem(&self) -> &str {
        &self.server.0
    }

    /// The server's private key (PKCS#8 PEM).
    pub fn server_key_pem(&self) -> &str {
        &self.server.1
    }

    /// The client certificate (PEM) for mutual TLS.
    pub fn client_cert_pem(&self) -> &str {
        &self.client.0
    }

    /// The client's private key (PKCS#8 PEM).
    pub fn client_key_pem(&self) -> &str {
        &self.client.1
    }
}

/// A certificate signed by `issuer` and its key, both PEM.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("valid subject alt names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate a leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign the leaf");
    (cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_material() {
        let ca = TestCa::new();
        for pem in [ca.ca_pem(), ca.server_cert_pem(), ca.client_cert_pem()] {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        for pem in [ca.server_key_pem(), ca.client_key_pem()] {
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        }
        assert_ne!(ca.server_cert_pem(), ca.client_cert_pem());
        assert_ne!(ca.ca_pem(), TestCa::new().ca_pem(), "fresh keys every time");
    }
}
