//! Test certificates (rcgen): a CA, and leaf certificates it signs.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A leaf certificate and its key, PEM.
#[derive(Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Result<(rcgen::Certificate, KeyPair)> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    Ok((p.self_signed(&key)?, key))
}

/// A certificate for the DNS names (or IP addresses) `names`, signed by `ca`.
pub fn issue(names: &[&str], ca: &rcgen::Certificate, ca_key: &KeyPair) -> Result<Issued> {
    let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca, ca_key)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
