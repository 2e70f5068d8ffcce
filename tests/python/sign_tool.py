"""Signatures in the exact wire formats margo-proxy verifies, made with `cryptography`
for the Rust integration tests (tests/trust.rs). Every command prints JSON.

Formats, from their published specifications:
- cosign simple signing (sigstore/cosign specs/SIGNATURE_SPEC.md, cosign v2): payload
  {"critical":{"identity","image":{"docker-manifest-digest"},"type"},"optional"} signed
  with ECDSA-P256-SHA256 (ASN.1 DER), Ed25519, or RSA PKCS#1 v1.5 SHA-256; base64.
- Sigstore bundle v0.3 (sigstore/protobuf-specs sigstore_bundle.proto,
  application/vnd.dev.sigstore.bundle.v0.3+json) with a public-key hint and a
  messageSignature over the manifest.
- Notary Project JWS envelope (notaryproject/specifications v1.1.0,
  signature-envelope-jws.md): flattened JWS JSON, ES256, signing scheme notary.x509,
  x5c chain; certificates with the code-signing EKU (signing-scheme.md).
- Notary Project COSE envelope (same version, signature-envelope-cose.md):
  COSE_Sign1_Tagged, alg -7 (ES256), epoch-tagged signing time, x5chain (label 33).
"""
import argparse
import base64
import calendar
import datetime
import hashlib
import json
import os
import sys

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def b64(b):
    return base64.b64encode(b).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def spki_der(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key, data):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def keygen(a):
    if a.kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif a.kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(a.out + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(a.out + ".pub", "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    print(json.dumps({"key": a.out + ".key", "pub": a.out + ".pub"}))


def cosign(a):
    payload = json.dumps({
        "critical": {
            "identity": {"docker-reference": a.reference},
            "image": {"docker-manifest-digest": a.digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }, separators=(",", ":")).encode()
    sig = sign(load_key(a.key), payload)
    if a.tamper:
        payload = payload.replace(b'"optional":null', b'"optional":{"x":"tampered"}')
    print(json.dumps({"payload": b64(payload), "signature": b64(sig)}))


def bundle(a):
    with open(a.manifest, "rb") as f:
        manifest = f.read()
    key = load_key(a.key)
    out = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": b64(hashlib.sha256(spki_der(key)).digest())},
            "tlogEntries": [],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(manifest).digest())},
            "signature": b64(sign(key, manifest)),
        },
    }
    print(json.dumps({"bundle": b64(json.dumps(out).encode())}))


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Margo Tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pki(a):
    """A root CA and a code-signing leaf under it (valid, or expired yesterday)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(a.cn + " Root")).issuer_name(name(a.cn + " Root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    if a.expired:
        nb, na = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
    else:
        nb, na = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    leaf = (x509.CertificateBuilder().subject_name(name(a.cn)).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(na)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(a.out, exist_ok=True)
    paths = {"ca": os.path.join(a.out, "ca.pem"), "leaf": os.path.join(a.out, "leaf.pem"),
             "key": os.path.join(a.out, "leaf.key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["leaf"], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    paths["signing_time"] = (na - datetime.timedelta(hours=1) if a.expired else now).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(json.dumps(paths))


def notary(a):
    key = load_key(a.key)
    chain = []
    for p in (a.leaf, a.ca):
        with open(p, "rb") as f:
            chain.append(b64(x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)))
    protected = json.dumps({
        "alg": "ES256",
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": a.signing_time,
        "crit": ["io.cncf.notary.signingScheme"],
    }).encode()
    payload = json.dumps({"targetArtifact": {"mediaType": a.media_type, "digest": a.digest,
                                             "size": a.size}}).encode()
    def fixed(data):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if a.envelope == "cose":
        ders = [base64.b64decode(c) for c in chain]
        signed_at = calendar.timegm(datetime.datetime.strptime(a.signing_time, "%Y-%m-%dT%H:%M:%SZ").timetuple())
        prot = cbor2.dumps({
            1: -7,
            2: ["io.cncf.notary.signingScheme"],
            3: "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": cbor2.CBORTag(1, signed_at),
        })
        tbs = cbor2.dumps(["Signature1", prot, b"", payload])
        env = cbor2.dumps(cbor2.CBORTag(18, [prot, {33: ders, "io.cncf.notary.signingAgent": "margo-proxy-tests/1.0"},
                                              payload, fixed(tbs)]))
        print(json.dumps({"envelope": b64(env)}))
        return
    signing_input = (b64url(protected) + "." + b64url(payload)).encode()
    sig = fixed(signing_input)
    env = {"payload": b64url(payload), "protected": b64url(protected),
           "header": {"x5c": chain, "io.cncf.notary.signingAgent": "margo-proxy-tests/1.0"},
           "signature": b64url(sig)}
    print(json.dumps({"envelope": b64(json.dumps(env).encode())}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen"); k.add_argument("--kind", required=True); k.add_argument("--out", required=True)
    c = sub.add_parser("cosign"); c.add_argument("--key", required=True); c.add_argument("--digest", required=True)
    c.add_argument("--reference", default="margo/test"); c.add_argument("--tamper", action="store_true")
    b = sub.add_parser("bundle"); b.add_argument("--key", required=True); b.add_argument("--manifest", required=True)
    x = sub.add_parser("pki"); x.add_argument("--out", required=True); x.add_argument("--cn", default="Margo Vendor")
    x.add_argument("--expired", action="store_true")
    n = sub.add_parser("notary")
    for opt in ("--key", "--leaf", "--ca", "--digest", "--signing-time"):
        n.add_argument(opt, required=True)
    n.add_argument("--size", type=int, required=True)
    n.add_argument("--media-type", default="application/vnd.oci.image.manifest.v1+json")
    n.add_argument("--envelope", choices=["jws", "cose"], default="jws")
    a = p.parse_args()
    {"keygen": keygen, "cosign": cosign, "bundle": bundle, "pki": pki, "notary": notary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
