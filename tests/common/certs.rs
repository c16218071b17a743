//! Test certificates made at run time with rcgen: a CA and node certificates it signs
//! (no private key is checked in).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for 127.0.0.1 and localhost, usable as server and as client, signed
    /// by this CA: (certificate PEM, key PEM).
    pub fn node_cert(&self) -> (String, String) {
        self.node_cert_for(&["127.0.0.1", "localhost"])
    }

    /// [`TestCa::node_cert`] for the addresses and names `names`.
    pub fn node_cert_for(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("a node key");
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, "baton node");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed node certificate");
        (cert.pem(), key.serialize_pem())
    }
}
