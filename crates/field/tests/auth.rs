//! Mutual authentication between provisioned simulated devices (and a
//! server holding its key in a keystore): success, and one test per attack,
//! each asserting the specific refusal and that neither device changed
//! (flash, protected storage, lock bit and write counters byte for byte).
use std::collections::BTreeMap;
use std::path::Path;

use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, Issuer,
    KeyIdMethod, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_field::auth::sim::{self, Role};
use trustchain_field::auth::{
    AwaitFinish, Endpoint, Error, Initiator, KeystoreEndpoint, Nonce, Policy, Reason, Responder,
    SbmEndpoint,
};
use trustchain_formats::auth::{self as wire, Response};
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::EcdsaKey;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::keystore::{KeyLabel, KeyStore, Signer};
use trustchain_oem::oem::OemDir;
use trustchain_oem::pki;
use trustchain_oem::product::Product;
use trustchain_programmer::client::Programmer;
use trustchain_programmer::lab;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::hal::Field;

const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

struct Oem {
    dir: tempfile::TempDir,
    oem: OemDir,
    ks: SealedKeyStore,
}

fn oem(id: u32) -> Oem {
    oem_named(id, "Acme")
}

fn oem_named(id: u32, name: &str) -> Oem {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oem");
    let pass = || Passphrase::new(zeroize::Zeroizing::new("test".to_string())).unwrap();
    OemDir::init(&path, OemId::new(id).unwrap(), name, &pass(), FAST, "test").unwrap();
    let oem = OemDir::open(&path).unwrap();
    let mut ks = oem.unlock(&pass()).unwrap();
    for (pid, name) in [(7, "Thermostat"), (8, "Gateway")] {
        Product::create(&oem, &mut ks, product(pid), name, None, "test").unwrap();
    }
    Oem { dir, oem, ks }
}

fn product(id: u32) -> ProductId {
    ProductId::new(id).unwrap()
}

fn device(o: &Oem, name: &str, uid: &[u8], pid: u32) -> SimDevice {
    let dir = o.dir.path().join(name);
    let mut dev = SimDevice::create(&dir, uid, 0x42, Geometry::SMALL_PAGES).unwrap();
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        lab::provision(&mut prog, &o.oem, &o.ks, product(pid), uid[0] as u64).unwrap();
    }
    dev.save().unwrap();
    dev
}

/// Everything a device holds, for "no state change" assertions.
#[derive(Debug, PartialEq, Eq)]
struct State {
    flash: Vec<u8>,
    fields: Vec<Option<Vec<u8>>>,
    locked: bool,
    protected_writes: u64,
    flash_counters: trustchain_device_sim::FlashCounters,
}

fn state(d: &SimDevice) -> State {
    State {
        flash: d.flash().raw().to_vec(),
        fields: Field::ALL
            .iter()
            .map(|f| d.protected().peek(*f).map(<[u8]>::to_vec))
            .collect(),
        locked: d.protected().lock_bit(),
        protected_writes: d.protected().writes(),
        flash_counters: d.flash().counters(),
    }
}

/// Runs `f` and asserts that no device in `devs` changed.
fn unchanged<R>(devs: &mut [&mut SimDevice], f: impl FnOnce(&mut [&mut SimDevice]) -> R) -> R {
    let before: Vec<State> = devs.iter().map(|d| state(d)).collect();
    let r = f(devs);
    let after: Vec<State> = devs.iter().map(|d| state(d)).collect();
    assert!(
        before == after,
        "a device changed state during authentication"
    );
    r
}

fn now() -> u64 {
    Policy::now().now
}

fn refused(r: Result<impl std::fmt::Debug, Error>) -> Reason {
    match r {
        Err(e) => e
            .reason()
            .unwrap_or_else(|| panic!("not a refusal of the peer: {e}")),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

/// Runs A (initiator) against B (responder) through `trustchain auth`'s
/// driver; returns who refused and why.
fn run(a: &mut SimDevice, b: &mut SimDevice, pa: Policy, pb: Policy) -> Result<(), (Role, Reason)> {
    unchanged(&mut [a, b], |d| {
        let [a, b] = d else { unreachable!() };
        let out = sim::authenticate(a, b, pa, pb).unwrap();
        match out.result {
            Ok(m) => {
                assert_eq!(m.a_sees.peer(), &out.b.certificate);
                assert_eq!(m.b_sees.peer(), &out.a.certificate);
                assert_eq!(m.a_sees.transcript_hash(), m.b_sees.transcript_hash());
                assert_eq!(out.messages.len(), 3);
                Ok(())
            }
            Err(f) => Err((
                f.side,
                f.error
                    .reason()
                    .unwrap_or_else(|| panic!("not a refusal: {}", f.error)),
            )),
        }
    })
}

#[test]
fn two_devices_authenticate_each_other() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1, 2, 3, 4], 7);
    let mut b = device(&o, "b", &[5, 6, 7, 8], 7);
    let out = unchanged(&mut [&mut a, &mut b], |d| {
        let [a, b] = d else { unreachable!() };
        sim::authenticate(a, b, Policy::now(), Policy::now()).unwrap()
    });
    let m = out.result.unwrap();
    // Each side sees the other's identity: UID, product, OEM.
    assert_eq!(out.a.uid, "01020304");
    assert_eq!(out.b.uid, "05060708");
    assert_eq!(m.a_sees.peer().uid.as_deref(), Some("05060708"));
    assert_eq!(m.b_sees.peer().uid.as_deref(), Some("01020304"));
    assert_eq!(m.a_sees.peer().product_id, Some(product(7)));
    assert_eq!(m.b_sees.peer().oem_id, OemId::new(0x1234));
    assert_eq!(m.a_sees.transcript_hash(), m.b_sees.transcript_hash());
    assert_eq!(m.a_sees.chain().len(), 2);
    // A second session has another transcript (fresh nonces).
    let again = sim::authenticate(&mut a, &mut b, Policy::now(), Policy::now()).unwrap();
    assert_ne!(
        again.result.unwrap().a_sees.transcript_hash(),
        m.a_sees.transcript_hash()
    );
    // Nothing was written to disk either: reopening gives the same device.
    let reopened = SimDevice::open(o.dir.path().join("a")).unwrap();
    assert_eq!(state(&reopened).flash, state(&a).flash);
    assert_eq!(state(&reopened).fields, state(&a).fields);
}

#[test]
fn a_peer_under_another_oem_root_is_unknown() {
    let o = oem(0x1234);
    // Same OEM ID, another root: only the root tells them apart.
    let other = oem_named(0x1234, "Other");
    let mut a = device(&other, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    assert_eq!(
        run(&mut a, &mut b, Policy::now(), Policy::now()),
        Err((Role::Responder, Reason::UnknownRoot))
    );
    // A root of the same name ("Acme Root CA") but another key: the path
    // reaches our root by name and its signature does not verify.
    let twin = oem(0x1234);
    let mut t = device(&twin, "t", &[3], 7);
    assert_eq!(
        run(&mut t, &mut b, Policy::now(), Policy::now()),
        Err((Role::Responder, Reason::ChainBadSignature))
    );
    // The other way round, the initiator's SBM says the same of B... after
    // B refused A's hello, so drive A against a server that trusts A's root
    // but holds a certificate of the other root.
    let (mut server, _) = server(&o, 0x1234, 7, other.oem.root_der().unwrap());
    unchanged(&mut [&mut a], |d| {
        let mut pa = Programmer::new(SimLink::new(d[0]).unwrap());
        let mut ea = SbmEndpoint::new(&mut pa).unwrap();
        let (await_r, hello) = Initiator::start(&mut ea, Policy::now(), fresh()).unwrap();
        let (_, response) =
            Responder::receive(&mut server, Policy::now(), fresh(), &hello).unwrap();
        assert_eq!(refused(await_r.receive(&response)), Reason::UnknownRoot);
    });
}

#[test]
fn expired_and_not_yet_valid_certificates() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    // The device CA is valid 15 years: in 2050 it has expired.
    let y2050 = 2_524_608_000;
    assert_eq!(
        run(&mut a, &mut b, Policy::at(y2050), Policy::at(y2050)),
        Err((Role::Responder, Reason::Expired))
    );
    // Before the certificates were issued.
    let y2000 = 946_684_800;
    assert_eq!(
        run(&mut a, &mut b, Policy::at(y2000), Policy::at(y2000)),
        Err((Role::Responder, Reason::Expired))
    );
    // Only the initiator's clock is wrong: it refuses the responder.
    assert_eq!(
        run(&mut a, &mut b, Policy::at(y2050), Policy::now()),
        Err((Role::Initiator, Reason::Expired))
    );
    assert_eq!(run(&mut a, &mut b, Policy::now(), Policy::now()), Ok(()));
}

#[test]
fn wrong_product_is_refused_unless_allowed() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut gw = device(&o, "gw", &[2], 8);
    // By default each side accepts its own product only.
    assert_eq!(
        run(&mut a, &mut gw, Policy::now(), Policy::now()),
        Err((Role::Responder, Reason::WrongProduct))
    );
    let allow = |ids: &[u32]| Policy {
        products: Some(ids.iter().map(|&i| product(i)).collect()),
        ..Policy::now()
    };
    // The gateway accepts thermostats, the thermostat only thermostats.
    assert_eq!(
        run(&mut a, &mut gw, Policy::now(), allow(&[7])),
        Err((Role::Initiator, Reason::WrongProduct))
    );
    assert_eq!(run(&mut a, &mut gw, allow(&[7, 8]), allow(&[7, 8])), Ok(()));
}

/// A server (or rogue end) of `o`'s PKI: a keystore key certified by `o`'s
/// device CA with `oem_id` and `pid`, trusting `root`.
fn server(o: &Oem, oem_id: u32, pid: u32, root: Vec<u8>) -> (KeystoreEndpoint, Vec<u8>) {
    let (key, _) = EcdsaKey::generate().unwrap();
    let dca = o.oem.device_ca_der().unwrap();
    let issuer = pki::issuer_from_der(&dca).unwrap();
    let ca_key = o.ks.signer(&KeyLabel::device_ca()).unwrap();
    let vars: BTreeMap<&str, String> = [
        ("serial", "90000001".to_string()),
        ("uid", "5e7e7e7e".to_string()),
        ("oem_id", oem_id.to_string()),
        ("product_id", pid.to_string()),
        ("oem_name", "Acme".to_string()),
        ("product_name", "Update server".to_string()),
    ]
    .into_iter()
    .collect();
    let cert = pki::issue_device_cert(
        &o.oem.product(product(7)).unwrap().template,
        &vars,
        key.public_key(),
        OemId::new(oem_id).unwrap(),
        product(pid),
        &issuer,
        ca_key.as_ref(),
    )
    .unwrap();
    let ep = KeystoreEndpoint::new(Box::new(key), vec![cert.clone(), dca], root).unwrap();
    (ep, cert)
}

#[test]
fn a_peer_of_another_oem_id_under_the_same_root_is_wrong_oem() {
    let o = oem(0x1234);
    let mut b = device(&o, "b", &[2], 7);
    let (mut rogue, _) = server(&o, 0x9999, 7, o.oem.root_der().unwrap());
    unchanged(&mut [&mut b], |d| {
        let mut pb = Programmer::new(SimLink::new(d[0]).unwrap());
        let mut eb = SbmEndpoint::new(&mut pb).unwrap();
        let policy = Policy {
            products: Some(vec![product(7)]),
            ..Policy::now()
        };
        let (_, hello) = Initiator::start(&mut rogue, policy, Nonce::random().unwrap()).unwrap();
        let r = Responder::receive(&mut eb, Policy::now(), Nonce::random().unwrap(), &hello);
        assert_eq!(refused(r), Reason::WrongOem);
    });
}

#[test]
fn a_device_and_a_server_authenticate_each_other() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let (mut srv, srv_cert) = server(&o, 0x1234, 8, o.oem.root_der().unwrap());
    unchanged(&mut [&mut a], |d| {
        let mut pa = Programmer::new(SimLink::new(d[0]).unwrap());
        let mut ea = SbmEndpoint::new(&mut pa).unwrap();
        let both = || Policy {
            products: Some(vec![product(7), product(8)]),
            ..Policy::now()
        };
        let (await_r, hello) = Initiator::start(&mut ea, both(), Nonce::random().unwrap()).unwrap();
        let (await_f, response) =
            Responder::receive(&mut srv, both(), Nonce::random().unwrap(), &hello).unwrap();
        let (a_sees, finish) = await_r.receive(&response).unwrap();
        let srv_sees = await_f.receive(&finish).unwrap();
        assert_eq!(a_sees.chain()[0], srv_cert);
        assert_eq!(srv_sees.peer().uid.as_deref(), Some("01"));
        assert_eq!(a_sees.transcript_hash(), srv_sees.transcript_hash());
    });
}

/// rcgen's signing key over a keystore signer (the device CA's key stays in
/// the sealed keystore).
struct CaKey(Box<dyn Signer>);

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0.public_key().0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let f = self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        // ECDSA-Sig-Value (RFC 3279 §2.2.3) from r || s.
        let int = |v: &[u8]| {
            let v = &v[v.iter().position(|&b| b != 0).unwrap_or(31)..];
            let mut out = vec![0x02];
            if v[0] & 0x80 != 0 {
                out.extend([v.len() as u8 + 1, 0]);
            } else {
                out.push(v.len() as u8);
            }
            out.extend(v);
            out
        };
        let mut body = int(&f[..32]);
        body.extend(int(&f[32..]));
        let mut der = vec![0x30, body.len() as u8];
        der.extend(body);
        Ok(der)
    }
}

/// A CRL of `o`'s device CA revoking `serials`, valid from an hour ago
/// until `next_update`.
fn crl(o: &Oem, serials: &[Vec<u8>], next_update: OffsetDateTime) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Acme Device CA");
    dn.push(DnType::OrganizationName, "Acme");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(params, CaKey(o.ks.signer(&KeyLabel::device_ca()).unwrap()));
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - Duration::hours(2),
        next_update,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now - Duration::hours(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .der()
    .to_vec()
}

fn leaf_serial(dev: &mut SimDevice) -> Vec<u8> {
    let mut p = Programmer::new(SimLink::new(dev).unwrap());
    let (chain, _) = p.cert_chain().unwrap();
    hex::decode(
        trustchain_field::auth::CertIdentity::from_leaf(&chain[0])
            .unwrap()
            .serial,
    )
    .unwrap()
}

#[test]
fn a_revoked_peer_is_refused() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    let mut c = device(&o, "c", &[3], 7);
    let later = OffsetDateTime::now_utc() + Duration::days(30);
    let revokes_a = crl(&o, &[leaf_serial(&mut a)], later);
    let with = |crl: &Vec<u8>| Policy {
        crls: vec![crl.clone()],
        ..Policy::now()
    };
    // B holds the CRL: A is refused, whichever role it takes.
    assert_eq!(
        run(&mut a, &mut b, Policy::now(), with(&revokes_a)),
        Err((Role::Responder, Reason::Revoked))
    );
    assert_eq!(
        run(&mut b, &mut a, with(&revokes_a), Policy::now()),
        Err((Role::Initiator, Reason::Revoked))
    );
    // A device the CRL does not name passes.
    assert_eq!(
        run(&mut c, &mut b, with(&revokes_a), with(&revokes_a)),
        Ok(())
    );
    // A device that holds no CRL does not know (the SBM has no CRLs).
    assert_eq!(run(&mut a, &mut b, Policy::now(), Policy::now()), Ok(()));
    // A CRL past its nextUpdate, or not signed by the CA, refuses rather
    // than let a revoked device through.
    let stale = crl(&o, &[], OffsetDateTime::now_utc() - Duration::minutes(30));
    assert_eq!(
        run(&mut c, &mut b, Policy::now(), with(&stale)),
        Err((Role::Responder, Reason::BadCrl))
    );
    let mut forged = crl(&o, &[], later);
    let n = forged.len();
    forged[n - 3] ^= 0x01;
    assert_eq!(
        run(&mut c, &mut b, Policy::now(), with(&forged)),
        Err((Role::Responder, Reason::BadCrl))
    );
    assert_eq!(
        run(&mut c, &mut b, Policy::now(), with(&b"not a CRL".to_vec())),
        Err((Role::Responder, Reason::BadCrl))
    );
}

/// Runs A against B; a refusal comes back with its side, reason and detail.
fn run_detail(
    a: &mut SimDevice,
    b: &mut SimDevice,
    pa: Policy,
    pb: Policy,
) -> Result<(), (Role, Reason, String)> {
    unchanged(&mut [a, b], |d| {
        let [a, b] = d else { unreachable!() };
        match sim::authenticate(a, b, pa, pb).unwrap().result {
            Ok(_) => Ok(()),
            Err(f) => match f.error {
                Error::Refused { reason, detail } => Err((f.side, reason, detail)),
                other => panic!("not a refusal: {other}"),
            },
        }
    })
}

#[test]
fn a_crl_past_its_next_update_is_refused_as_bad_crl_until_refreshed() {
    // A replayed old CRL (one made before a later revocation) is only good
    // until its own nextUpdate: at `now` >= nextUpdate the side holding it
    // refuses every peer it covers, revoked or not, with `bad-crl`.
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    let mut c = device(&o, "c", &[3], 7);
    let next_update = (OffsetDateTime::now_utc() + Duration::days(1))
        .replace_nanosecond(0)
        .unwrap();
    let t = next_update.unix_timestamp() as u64;
    let revokes_a = crl(&o, &[leaf_serial(&mut a)], next_update);
    let at = |now: u64| Policy {
        crls: vec![revokes_a.clone()],
        now,
        ..Policy::now()
    };
    // One second before nextUpdate the CRL is current: it revokes A, and
    // C, which it does not list, passes.
    assert_eq!(
        run_detail(&mut a, &mut b, Policy::at(t - 1), at(t - 1)).map_err(|(s, r, _)| (s, r)),
        Err((Role::Responder, Reason::Revoked))
    );
    assert_eq!(
        run_detail(&mut c, &mut b, Policy::at(t - 1), at(t - 1)),
        Ok(())
    );
    // At nextUpdate and after, it is expired: C is refused too, A still is
    // (bad-crl rather than revoked: the list can no longer be trusted).
    let stamp = next_update
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for now in [t, t + 86_400] {
        for (peer, name) in [(&mut c, "C"), (&mut a, "A")] {
            let (side, reason, detail) =
                run_detail(peer, &mut b, Policy::at(now), at(now)).unwrap_err();
            assert_eq!((side, reason), (Role::Responder, Reason::BadCrl), "{name}");
            for needle in [
                "expired at",
                stamp.as_str(),
                "nextUpdate",
                "Acme Device CA",
                "CRL number 1",
                "trustchain oem revoke OEM_DIR --refresh",
                "crl.pem",
            ] {
                assert!(detail.contains(needle), "{name}: {needle:?} in {detail}");
            }
        }
    }
    // The initiator enforces it the same way.
    assert_eq!(
        run_detail(&mut b, &mut c, at(t), Policy::at(t)).map_err(|(s, r, _)| (s, r)),
        Err((Role::Initiator, Reason::BadCrl))
    );
    // A side without the CRL is not affected by its age.
    assert_eq!(
        run_detail(&mut c, &mut b, Policy::at(t), Policy::at(t)),
        Ok(())
    );
}

/// The two devices' endpoints, for driving the states by hand.
fn with_endpoints<R>(
    a: &mut SimDevice,
    b: &mut SimDevice,
    f: impl FnOnce(&mut dyn Endpoint, &mut dyn Endpoint) -> R,
) -> R {
    unchanged(&mut [a, b], |d| {
        let [a, b] = d else { unreachable!() };
        let mut pa = Programmer::new(SimLink::new(a).unwrap());
        let mut pb = Programmer::new(SimLink::new(b).unwrap());
        let mut ea = SbmEndpoint::new(&mut pa).unwrap();
        let mut eb = SbmEndpoint::new(&mut pb).unwrap();
        f(&mut ea, &mut eb)
    })
}

fn fresh() -> Nonce {
    Nonce::random().unwrap()
}

/// One complete session; returns (hello, response, finish).
fn session(
    ea: &mut dyn Endpoint,
    eb: &mut dyn Endpoint,
    ni: Nonce,
    nr: Nonce,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (await_r, hello) = Initiator::start(ea, Policy::now(), ni).unwrap();
    let (await_f, response) = Responder::receive(eb, Policy::now(), nr, &hello).unwrap();
    let (_, finish) = await_r.receive(&response).unwrap();
    await_f.receive(&finish).unwrap();
    (hello, response, finish)
}

#[test]
fn a_replayed_transcript_is_stale() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    with_endpoints(&mut a, &mut b, |ea, eb| {
        let (hello, response, finish) = session(ea, eb, fresh(), fresh());

        // To A, in a new session: the recorded response answers the old nonce.
        let (await_r, _) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        assert_eq!(refused(await_r.receive(&response)), Reason::StaleNonce);

        // To B: the recorded hello is answered with a fresh nonce, which the
        // recorded finish does not answer.
        let (await_f, _) = Responder::receive(eb, Policy::now(), fresh(), &hello).unwrap();
        assert_eq!(refused(await_f.receive(&finish)), Reason::StaleNonce);

        // Patching the echoed nonce to the new one leaves the signature over
        // the old transcript: bad signature.
        let ni = fresh();
        let (await_r, _) = Initiator::start(ea, Policy::now(), ni).unwrap();
        let patched = patch_response_nonce(&response, ni.bytes());
        assert_eq!(refused(await_r.receive(&patched)), Reason::BadSignature);
        let nr = fresh();
        let (await_f, _) = Responder::receive(eb, Policy::now(), nr, &hello).unwrap();
        let mut patched = finish.clone();
        patched[4..36].copy_from_slice(nr.bytes());
        assert_eq!(refused(await_f.receive(&patched)), Reason::BadSignature);
    });
}

fn patch_response_nonce(response: &[u8], nonce: &[u8; 32]) -> Vec<u8> {
    let r = Response::parse(response).unwrap();
    let certs = r.chain.certs();
    wire::encode_response(nonce, r.nonce_r, certs, r.signature).unwrap()
}

#[test]
fn a_relayed_or_reflected_challenge_is_refused() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    // M: a genuine device of the same OEM and product, turned rogue.
    let mut m = device(&o, "m", &[3], 7);
    let m_chain = {
        let mut p = Programmer::new(SimLink::new(&mut m).unwrap());
        p.cert_chain().unwrap().0
    };
    with_endpoints(&mut a, &mut b, |ea, eb| {
        // A opens a session with M. M relays A's challenge (nonce) to B
        // under its own chain, and passes B's signed response back to A as
        // if B were answering A: B signed another transcript (M's chain).
        let (await_r, hello_a) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        let nonce_a = *wire::Hello::parse(&hello_a).unwrap().nonce;
        let m_refs: Vec<&[u8]> = m_chain.iter().map(Vec::as_slice).collect();
        let hello_m = wire::encode_hello(&nonce_a, &m_refs).unwrap();
        let (_, response_b) = Responder::receive(eb, Policy::now(), fresh(), &hello_m).unwrap();
        assert_eq!(refused(await_r.receive(&response_b)), Reason::BadSignature);

        // The other way: M forwards A's hello to B unchanged and answers A
        // with B's response, but swaps in its own chain: B's signature does
        // not cover M's chain.
        let (await_r, hello_a) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        let (_, response_b) = Responder::receive(eb, Policy::now(), fresh(), &hello_a).unwrap();
        let r = Response::parse(&response_b).unwrap();
        let swapped = wire::encode_response(r.nonce_i, r.nonce_r, &m_refs, r.signature).unwrap();
        assert_eq!(refused(await_r.receive(&swapped)), Reason::BadSignature);

        // Reflection: A's own hello sent back to A as responder.
        let (_, hello_a) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        let r = Responder::receive(ea, Policy::now(), fresh(), &hello_a);
        assert_eq!(refused(r), Reason::Reflected);
        // ... and a response carrying A's own chain, sent to A.
        let (await_r, hello_a) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        let h = wire::Hello::parse(&hello_a).unwrap();
        let mirror = wire::encode_response(h.nonce, &[7; 32], h.chain.certs(), &[1; 64]).unwrap();
        assert_eq!(refused(await_r.receive(&mirror)), Reason::Reflected);

        // A responder's signature passed off as an initiator's: B answers
        // A's hello; M sends B's response signature back to B as the finish
        // of that same session. The labels differ (and so would the key).
        let (await_f, response_b) =
            Responder::receive(eb, Policy::now(), fresh(), &hello_a).unwrap();
        let r = Response::parse(&response_b).unwrap();
        let fake = wire::encode_finish(r.nonce_r, r.signature);
        assert_eq!(refused(await_f.receive(&fake)), Reason::BadSignature);
    });
}

#[test]
fn messages_out_of_order_or_of_another_version() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    with_endpoints(&mut a, &mut b, |ea, eb| {
        let (hello, response, finish) = session(ea, eb, fresh(), fresh());
        // A finish where a hello is expected, a hello where a response is.
        assert_eq!(
            refused(Responder::receive(eb, Policy::now(), fresh(), &finish)),
            Reason::UnexpectedMessage
        );
        let (await_r, _) = Initiator::start(ea, Policy::now(), fresh()).unwrap();
        assert_eq!(refused(await_r.receive(&hello)), Reason::UnexpectedMessage);
        let (await_f, _) = Responder::receive(eb, Policy::now(), fresh(), &hello).unwrap();
        assert_eq!(
            refused(await_f.receive(&response)),
            Reason::UnexpectedMessage
        );
        // Version 2.
        let mut v2 = hello.clone();
        v2[2] = 0x02;
        assert_eq!(
            refused(Responder::receive(eb, Policy::now(), fresh(), &v2)),
            Reason::ProtocolVersion
        );
    });
}

/// Every single-bit change of each message, and every truncation, is
/// refused, by the side that receives it or (for what the responder cannot
/// check yet: the initiator's nonce) by the initiator one step later; never
/// does a session with an altered message complete.
#[test]
fn every_tampered_byte_of_every_message_is_refused() {
    let o = oem(0x1234);
    let mut a = device(&o, "a", &[1], 7);
    let mut b = device(&o, "b", &[2], 7);
    // Fixed nonces, so that A and B can be put back in the same state for
    // every attempt (the SBM's signatures are deterministic, RFC 6979).
    let ni = Nonce::from_bytes([0x11; 32]);
    let nr = Nonce::from_bytes([0x22; 32]);
    with_endpoints(&mut a, &mut b, |ea, eb| {
        let (hello, response, finish) = session(ea, eb, ni, nr);
        // Field offsets: hello = 84 01 01 58 20 <nonce-i> <chain>.
        let nonce_at = 5..37;
        let mut seen = BTreeMap::<(&str, Reason), usize>::new();
        let mut count = |m: &'static str, r: Reason| *seen.entry((m, r)).or_default() += 1;

        for i in 0..hello.len() {
            let mut t = hello.clone();
            t[i] ^= 0x01;
            let reason = match Responder::receive(eb, Policy::now(), nr, &t) {
                Err(e) => e.reason().expect("a refusal"),
                Ok((_, response)) => {
                    // Only the nonce can change unnoticed by B; A notices.
                    assert!(nonce_at.contains(&i), "hello byte {i} changed unnoticed");
                    let (await_r, _) = Initiator::start(ea, Policy::now(), ni).unwrap();
                    let r = refused(await_r.receive(&response));
                    assert_eq!(r, Reason::StaleNonce);
                    r
                }
            };
            count("hello", reason);
        }
        for i in 0..response.len() {
            let mut t = response.clone();
            t[i] ^= 0x01;
            let (await_r, _) = Initiator::start(ea, Policy::now(), ni).unwrap();
            let r = refused(await_r.receive(&t));
            // 86 02 01 58 20 <nonce-i> 58 20 <nonce-r> <chain> 58 40 <sig>
            if (5..37).contains(&i) {
                assert_eq!(r, Reason::StaleNonce, "response byte {i}");
            }
            if (39..71).contains(&i) || i >= response.len() - 64 {
                assert_eq!(r, Reason::BadSignature, "response byte {i}");
            }
            count("response", r);
        }
        for i in 0..finish.len() {
            let mut t = finish.clone();
            t[i] ^= 0x01;
            let (await_f, _) = Responder::receive(eb, Policy::now(), nr, &hello).unwrap();
            let r = refused(await_f.receive(&t));
            // 83 03 58 20 <nonce-r> 58 40 <sig>
            match i {
                0 | 2 | 3 | 36 | 37 => assert_eq!(r, Reason::Malformed, "finish byte {i}"),
                1 => assert_eq!(r, Reason::UnexpectedMessage),
                4..=35 => assert_eq!(r, Reason::StaleNonce),
                _ => assert_eq!(r, Reason::BadSignature),
            }
            count("finish", r);
        }
        for cut in 0..hello.len() {
            let r = Responder::receive(eb, Policy::now(), nr, &hello[..cut]);
            assert_eq!(refused(r), Reason::Malformed);
        }
        for cut in 0..response.len() {
            let (await_r, _) = Initiator::start(ea, Policy::now(), ni).unwrap();
            assert_eq!(
                refused(await_r.receive(&response[..cut])),
                Reason::Malformed
            );
        }
        for cut in 0..finish.len() {
            let (await_f, _) = Responder::receive(eb, Policy::now(), nr, &hello).unwrap();
            assert_eq!(refused(await_f.receive(&finish[..cut])), Reason::Malformed);
        }
        // And the untouched messages still pass from the same states.
        let (await_r, h) = Initiator::start(ea, Policy::now(), ni).unwrap();
        assert_eq!(h, hello);
        let (await_f, r) = Responder::receive(eb, Policy::now(), nr, &hello).unwrap();
        assert_eq!(r, response);
        let (_, f) = await_r.receive(&response).unwrap();
        assert_eq!(f, finish);
        check_finish(await_f, &finish);
        eprintln!("refusals by message and reason: {seen:?}");
        // The certificates' bytes are refused by the chain checks.
        assert!(seen.contains_key(&("hello", Reason::ChainBadSignature)));
        assert!(seen.contains_key(&("response", Reason::ChainBadSignature)));
    });
}

fn check_finish(await_f: AwaitFinish<'_>, finish: &[u8]) {
    await_f.receive(finish).unwrap();
}

#[test]
fn limits_of_this_sides_setup() {
    // A context above 64 bytes is this side's mistake, not the peer's.
    let o = oem(0x1234);
    let (mut srv, _) = server(&o, 0x1234, 7, o.oem.root_der().unwrap());
    let p = Policy {
        context: vec![0; 65],
        ..Policy::now()
    };
    assert!(matches!(
        Initiator::start(&mut srv, p, fresh()),
        Err(Error::Identity(_))
    ));
    // A keystore key that the leaf does not certify.
    let (other, _) = EcdsaKey::generate().unwrap();
    let chain = srv.chain().to_vec();
    assert!(KeystoreEndpoint::new(Box::new(other), chain, o.oem.root_der().unwrap()).is_err());
    let _ = Path::new("");
    let _ = now();
}
