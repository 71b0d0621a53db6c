//! The protocol between two simulated devices, each driven through its SBM
//! (`Programmer<SimLink>`), as `trustchain auth` runs it: device A is the
//! initiator, device B the responder. Nothing is written to either device:
//! GET_INFO, GET_CERT_CHAIN, VALIDATE_PEER_CHAIN and SIGN_CHALLENGE only
//! read protected storage, and the caller does not save the devices.
use trustchain_device_sim::SimDevice;
use trustchain_programmer::client::Programmer;
use trustchain_programmer::sim::SimLink;

use super::{Authenticated, CertIdentity, Error, Initiator, Nonce, Policy, Responder, SbmEndpoint};

/// Which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Device A, which sends `hello` and `finish`.
    Initiator,
    /// Device B, which sends `response`.
    Responder,
}

impl Role {
    /// `"initiator"` or `"responder"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Initiator => "initiator",
            Role::Responder => "responder",
        }
    }
}

/// A device as it describes itself: UID (GET_INFO) and its own leaf.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The UID, hex.
    pub uid: String,
    /// The device's own certificate.
    pub certificate: CertIdentity,
}

/// Both sides accepted each other.
#[derive(Debug)]
pub struct Mutual {
    /// What A authenticated: B.
    pub a_sees: Authenticated,
    /// What B authenticated: A.
    pub b_sees: Authenticated,
}

/// A side refused (or its device failed).
#[derive(Debug)]
pub struct Failure {
    /// The side that stopped the session.
    pub side: Role,
    /// Why.
    pub error: Error,
}

/// The result of one session.
#[derive(Debug)]
pub struct Outcome {
    /// Device A.
    pub a: DeviceIdentity,
    /// Device B.
    pub b: DeviceIdentity,
    /// The messages exchanged, in order (hello, response, finish: as many
    /// as were sent).
    pub messages: Vec<Vec<u8>>,
    /// Success, or who refused and why.
    pub result: Result<Mutual, Failure>,
}

fn identity<T: trustchain_programmer::client::Transport>(
    prog: &mut Programmer<T>,
    side: Role,
) -> Result<DeviceIdentity, Failure> {
    let fail = |error: Error| Failure { side, error };
    let info = prog.info().map_err(|e| fail(e.into()))?;
    let (chain, _) = prog.cert_chain().map_err(|e| fail(e.into()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| fail(Error::Identity("no certificate".into())))?;
    let certificate = CertIdentity::from_leaf(leaf).map_err(|e| fail(Error::Identity(e)))?;
    Ok(DeviceIdentity {
        uid: hex::encode(info.uid),
        certificate,
    })
}

/// Runs one session, A initiating, each side with its policy; fresh nonces.
pub fn authenticate(
    a: &mut SimDevice,
    b: &mut SimDevice,
    policy_a: Policy,
    policy_b: Policy,
) -> Result<Outcome, Failure> {
    let link = |dev, side| {
        SimLink::new(dev).map_err(|e| Failure {
            side,
            error: e.into(),
        })
    };
    let mut pa = Programmer::new(link(a, Role::Initiator)?);
    let mut pb = Programmer::new(link(b, Role::Responder)?);
    let id_a = identity(&mut pa, Role::Initiator)?;
    let id_b = identity(&mut pb, Role::Responder)?;
    let mut messages = vec![];
    let result = run(&mut pa, &mut pb, policy_a, policy_b, &mut messages);
    Ok(Outcome {
        a: id_a,
        b: id_b,
        messages,
        result,
    })
}

fn run(
    pa: &mut Programmer<SimLink<'_>>,
    pb: &mut Programmer<SimLink<'_>>,
    policy_a: Policy,
    policy_b: Policy,
    messages: &mut Vec<Vec<u8>>,
) -> Result<Mutual, Failure> {
    let on = |side| move |error| Failure { side, error };
    let mut ea = SbmEndpoint::new(pa).map_err(on(Role::Initiator))?;
    let mut eb = SbmEndpoint::new(pb).map_err(on(Role::Responder))?;
    let nonce_a = Nonce::random().map_err(on(Role::Initiator))?;
    let nonce_b = Nonce::random().map_err(on(Role::Responder))?;
    let (await_response, hello) =
        Initiator::start(&mut ea, policy_a, nonce_a).map_err(on(Role::Initiator))?;
    messages.push(hello.clone());
    let (await_finish, response) =
        Responder::receive(&mut eb, policy_b, nonce_b, &hello).map_err(on(Role::Responder))?;
    messages.push(response.clone());
    let (a_sees, finish) = await_response
        .receive(&response)
        .map_err(on(Role::Initiator))?;
    messages.push(finish.clone());
    let b_sees = await_finish.receive(&finish).map_err(on(Role::Responder))?;
    Ok(Mutual { a_sees, b_sees })
}
