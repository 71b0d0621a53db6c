//! The device side end to end on the simulator: lab provisioning, install
//! through the programmer, boot check at every reset, the application's
//! update path, runtime services, and every refusal leaving the device as
//! it was.
mod common;

use common::*;
use trustchain_device_sim::Geometry;
use trustchain_programmer::client::{challenge, verify_prehashed, Error, Programmer};
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::{BootOutcome, Status};

fn refused(r: Result<impl std::fmt::Debug, Error>) -> Status {
    match r {
        Err(Error::Refused(s)) => s,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn provision_install_boot_update_and_services() {
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 10_000, 1);
    let v2 = release(&o, "v2", "1.1.0", 12_345, 2);
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = provisioned_device(
        &o,
        &tmp.path().join("dev"),
        Geometry::SMALL_PAGES,
        b"\x01\x02\x03\x04",
    );
    let mut link = SimLink::new(&mut dev).unwrap();
    assert_eq!(
        link.boot(),
        BootOutcome::Recovery(Status::NoImage),
        "a new device waits for an image"
    );
    let mut prog = Programmer::new(link);
    let info = prog.info().unwrap();
    assert_eq!(info.lifecycle, 3, "locked after lab provisioning");
    assert_eq!(info.uid, b"\x01\x02\x03\x04");

    // Provisioning is refused after lock, with no change.
    assert_eq!(refused(prog.lock()), Status::Locked);
    assert_eq!(
        refused(prog.store_certs(&[vec![0x30]], &[0x30])),
        Status::Locked
    );
    assert_eq!(
        refused(prog.generate_keys(b"\x01\x02\x03\x04")),
        Status::Locked
    );

    // Factory install of v1.
    let (upk, enc) = read_release(&v1);
    let entry = prog
        .send_release(&upk, &enc, false, &mut |_, _| {})
        .unwrap();
    assert_eq!(entry.version_string(), "1.0.0");
    prog.reset().unwrap();
    match prog.transport_mut().last_boot {
        Some(BootOutcome::Run(i)) => assert_eq!(i.version, [1, 0, 0]),
        other => panic!("{other:?}"),
    }
    let (table, min) = prog.signature_table().unwrap();
    assert_eq!(table.unwrap().digest, entry.digest);
    assert_eq!(min, 1 << 32);

    // Runtime services: the chain, and a challenge signed by the identity key.
    let (chain, root) = prog.cert_chain().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(root, o.oem.root_der().unwrap());
    let cert = trustchain_oem::pki::parse_cert(&chain[0]).unwrap();
    let identity = trustchain_oem::pki::cert_public_key(&cert).unwrap();
    let sig = prog.sign_challenge("auth", b"nonce").unwrap();
    assert!(verify_prehashed(
        &identity.0,
        &challenge("auth", b"nonce"),
        &sig
    ));
    assert!(!verify_prehashed(
        &identity.0,
        &challenge("auth", b"nonce!"),
        &sig
    ));
    // TLS 1.3 client CertificateVerify: checked here by aws-lc-rs over the
    // RFC 8446 §4.4.3 message, built independently of the SBM.
    let hash = [0x5a; 32];
    let sig = prog.sign_tls13_client(&hash).unwrap();
    let mut message = vec![0x20u8; 64];
    message.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
    message.extend_from_slice(&hash);
    let tls_key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &identity.0,
    );
    tls_key.verify(&message, &sig).unwrap();
    message[100] ^= 1;
    assert!(tls_key.verify(&message, &sig).is_err());
    // SHA-384 suites hash to 48 bytes; any other length is refused.
    assert!(prog.sign_tls13_client(&[1; 48]).is_ok());
    for bad in [&[1u8; 31][..], &[1; 33], &[1; 49], &[]] {
        assert_eq!(refused(prog.sign_tls13_client(bad)), Status::BadRequest);
    }

    // The application's update path: stage v2, request, reset.
    let (upk2, enc2) = read_release(&v2);
    prog.send_release(&upk2, &enc2, true, &mut |_, _| {})
        .unwrap();
    assert_eq!(
        prog.info().unwrap().journal,
        1,
        "update requested, not yet installed"
    );
    prog.reset().unwrap();
    match prog.transport_mut().last_boot {
        Some(BootOutcome::Run(i)) => assert_eq!(i.version, [1, 1, 0]),
        other => panic!("{other:?}"),
    }
    // Rollback to v1 is refused and v2 keeps running.
    assert_eq!(
        refused(prog.send_release(&upk, &enc, true, &mut |_, _| {})),
        Status::Rollback
    );
    prog.reset().unwrap();
    assert!(
        matches!(prog.transport_mut().last_boot, Some(BootOutcome::Run(i)) if i.version == [1, 1, 0])
    );
}

#[test]
fn tampered_releases_are_refused_and_the_old_version_keeps_running() {
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 9_000, 1);
    let v2 = release(&o, "v2", "2.0.0", 9_000, 2);
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = provisioned_device(&o, &tmp.path().join("dev"), Geometry::LARGE_PAGES, b"\xaa");
    let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
    let (upk, enc) = read_release(&v1);
    prog.send_release(&upk, &enc, false, &mut |_, _| {})
        .unwrap();
    let (upk2, enc2) = read_release(&v2);

    let mut bad_enc = enc2.clone();
    bad_enc[5000] ^= 1;
    assert_eq!(
        refused(prog.send_release(&upk2, &bad_enc, true, &mut |_, _| {})),
        Status::CiphertextMismatch
    );
    let mut bad_sig = upk2.clone();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 1;
    assert_eq!(
        refused(prog.send_release(&bad_sig, &enc2, true, &mut |_, _| {})),
        Status::BadSignature
    );
    assert_eq!(
        refused(prog.send_release(&upk2[..upk2.len() - 3], &enc2, true, &mut |_, _| {})),
        Status::UpkMalformed
    );
    // Mix and match: v2's UPK with v1's image.
    assert_eq!(
        refused(prog.send_release(&upk2, &enc, true, &mut |_, _| {})),
        Status::CiphertextMismatch
    );
    assert_eq!(prog.info().unwrap().journal, 0, "no update was requested");
    prog.reset().unwrap();
    assert!(
        matches!(prog.transport_mut().last_boot, Some(BootOutcome::Run(i)) if i.version == [1, 0, 0])
    );
}

#[test]
fn a_tampered_application_does_not_run() {
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 5_000, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let mut dev = provisioned_device(&o, &dir, Geometry::SMALL_PAGES, b"\x01");
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        let (upk, enc) = read_release(&v1);
        prog.send_release(&upk, &enc, false, &mut |_, _| {})
            .unwrap();
    }
    dev.save().unwrap();
    // Flip one bit of the application in flash.bin, as an attacker with the file would.
    let mut flash = std::fs::read(dir.join("flash.bin")).unwrap();
    flash[100] ^= 0x01;
    std::fs::write(dir.join("flash.bin"), flash).unwrap();
    let mut dev = trustchain_device_sim::SimDevice::open(&dir).unwrap();
    let mut link = SimLink::new(&mut dev).unwrap();
    assert_eq!(
        link.boot(),
        BootOutcome::Recovery(Status::PlaintextMismatch)
    );
}

#[test]
fn a_device_validates_a_peer_chain_against_its_oem_root() {
    let o = oem();
    let other = oem();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = provisioned_device(&o, &tmp.path().join("a"), Geometry::SMALL_PAGES, b"\x0a");
    let mut b = provisioned_device(&o, &tmp.path().join("b"), Geometry::SMALL_PAGES, b"\x0b");
    let mut c = provisioned_device(
        &other,
        &tmp.path().join("c"),
        Geometry::SMALL_PAGES,
        b"\x0c",
    );
    let (b_chain, _) = Programmer::new(SimLink::new(&mut b).unwrap())
        .cert_chain()
        .unwrap();
    let (c_chain, _) = Programmer::new(SimLink::new(&mut c).unwrap())
        .cert_chain()
        .unwrap();
    let mut pa = Programmer::new(SimLink::new(&mut a).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = pa.validate_peer_chain(&b_chain, now).unwrap();
    let b_cert = trustchain_oem::pki::parse_cert(&b_chain[0]).unwrap();
    assert_eq!(
        key,
        trustchain_oem::pki::cert_public_key(&b_cert).unwrap().0
    );
    // Another OEM's device, a chain without its CA, and a time past the device CA's expiry.
    // (Both test OEMs are named "Acme", so webpki finds a name match and then
    // a signature that does not verify.)
    assert!(matches!(
        refused(pa.validate_peer_chain(&c_chain, now)),
        Status::PeerUnknownIssuer | Status::PeerBadSignature
    ));
    assert_eq!(
        refused(pa.validate_peer_chain(&b_chain[..1], now)),
        Status::PeerUnknownIssuer
    );
    assert_eq!(
        refused(pa.validate_peer_chain(&b_chain, now + 100 * 365 * 86_400)),
        Status::PeerExpired
    );
    let mut forged = b_chain.clone();
    let n = forged[0].len();
    forged[0][n - 3] ^= 1;
    assert!(matches!(
        refused(pa.validate_peer_chain(&forged, now)),
        Status::PeerBadSignature | Status::PeerInvalid
    ));
}

#[test]
fn a_refused_upk_leaves_flash_byte_identical() {
    let o = oem();
    let v2 = release(&o, "v2", "2.0.0", 7_000, 2);
    let v1 = release(&o, "v1", "1.0.0", 7_000, 1);
    let other = oem();
    let foreign = release(&other, "foreign", "3.0.0", 7_000, 3);
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = provisioned_device(&o, &tmp.path().join("dev"), Geometry::SMALL_PAGES, b"\x05");
    {
        let (upk, enc) = read_release(&v2);
        Programmer::new(SimLink::new(&mut dev).unwrap())
            .send_release(&upk, &enc, false, &mut |_, _| {})
            .unwrap();
    }
    let (upk1, enc1) = read_release(&v1);
    let (upk_f, enc_f) = read_release(&foreign);
    let mut bad_sig = upk1.clone();
    let n = bad_sig.len();
    bad_sig[n - 2] ^= 1;
    for (what, upk, enc, want) in [
        ("rollback", &upk1, &enc1, Status::Rollback),
        ("bad signature", &bad_sig, &enc1, Status::BadSignature),
        (
            "another OEM's release",
            &upk_f,
            &enc_f,
            Status::BadSignature,
        ),
    ] {
        let before = dev.flash().raw().to_vec();
        let r = Programmer::new(SimLink::new(&mut dev).unwrap()).send_release(
            upk,
            enc,
            true,
            &mut |_, _| {},
        );
        assert_eq!(refused(r), want, "{what}");
        assert!(dev.flash().raw() == &before[..], "{what}: flash changed");
    }
}

#[test]
fn signing_services_refuse_a_device_without_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = trustchain_device_sim::SimDevice::create(
        tmp.path().join("blank"),
        b"\x09",
        1,
        Geometry::SMALL_PAGES,
    )
    .unwrap();
    let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
    assert_eq!(
        refused(prog.sign_tls13_client(&[7; 32])),
        Status::NotProvisioned
    );
    assert_eq!(
        refused(prog.sign_challenge("auth", b"n")),
        Status::NotProvisioned
    );
}
