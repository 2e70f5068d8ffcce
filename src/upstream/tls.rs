//! CA bundles for upstream TLS, loaded once and shared by Pingora's connector and the
//! side-channel HTTP client so both trust exactly the same roots.

use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// DER certificates from a PEM file, each checked to parse as X.509 (Pingora's own
/// wrapper panics on bad DER, so nothing unchecked may reach it).
pub fn load_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("CA file {}: bad certificate: {e}", path.display()))?;
        out.push(cert.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    Ok(out)
}

pub fn pingora_ca(ders: &[Vec<u8>]) -> Arc<CaType> {
    let certs: Vec<WrappedX509> = ders
        .iter()
        .map(|d| WrappedX509::new(d.clone(), pingora::utils::tls::parse_x509))
        .collect();
    Arc::from(certs.into_boxed_slice())
}
