//! Every malformed frame or payload gets a specific status and changes
//! nothing in the device: flash and protected storage byte-identical.
mod common;

use common::*;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_formats::frame::{cmd, Frame, MAX_FRAME, RESPONSE};
use trustchain_programmer::client::Transport;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::Status;

fn snapshot(dev: &SimDevice) -> (Vec<u8>, Vec<Option<Vec<u8>>>, bool) {
    let fields = trustchain_sbm::hal::Field::ALL
        .iter()
        .map(|f| dev.protected().peek(*f).map(|v| v.to_vec()))
        .collect();
    (
        dev.flash().raw().to_vec(),
        fields,
        dev.protected().lock_bit(),
    )
}

fn status_of(response: &[u8]) -> Status {
    let f = Frame::parse(response).expect("the SBM always answers with a valid frame");
    assert_eq!(f.kind & RESPONSE, RESPONSE);
    Status::from_u8(f.payload[0]).expect("a known status")
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME];
    let n = Frame::write(kind, 1, payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn malformed_frames_and_payloads_are_refused_without_change() {
    let o = oem();
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = provisioned_device(
        &o,
        &tmp.path().join("dev"),
        Geometry::SMALL_PAGES,
        b"\x01\x02",
    );
    let before = snapshot(&dev);
    {
        let mut link = SimLink::new(&mut dev).unwrap();
        // Transport-level damage.
        let good = frame(cmd::GET_INFO, &[0x80]);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            assert_eq!(
                status_of(&link.exchange(&bad).unwrap()),
                Status::BadFrame,
                "flip at byte {i}"
            );
        }
        assert_eq!(
            status_of(&link.exchange(&good[..good.len() - 1]).unwrap()),
            Status::BadFrame
        );
        assert_eq!(status_of(&link.exchange(&[]).unwrap()), Status::BadFrame);
        // Unknown command; payloads of the wrong shape for each command.
        assert_eq!(
            status_of(&link.exchange(&frame(0x7e, &[0x80])).unwrap()),
            Status::UnknownCommand
        );
        let shapes: [&[u8]; 6] = [
            &[],
            &[0xa0],
            &[0x81, 0x00],
            &[0x9f, 0xff],
            &[0x80, 0x00],
            &[0x5f, 0xff],
        ];
        for c in [
            cmd::GET_INFO,
            cmd::GENERATE_KEYS,
            cmd::STORE_CERTS,
            cmd::INSTALL_OEM_KEYS,
            cmd::IMAGE_BEGIN,
            cmd::IMAGE_DATA,
            cmd::SIGN_CHALLENGE,
            cmd::SIGN_TLS13_CLIENT,
            cmd::VALIDATE_PEER_CHAIN,
        ] {
            for p in shapes {
                let s = status_of(&link.exchange(&frame(c, p)).unwrap());
                assert_ne!(s, Status::Ok, "command {c:#x} accepted payload {p:02x?}");
            }
        }
        // Image data without IMAGE_BEGIN, IMAGE_END without data, out-of-order data.
        let data = {
            let mut e = minicbor::Encoder::new(Vec::new());
            e.array(2)
                .unwrap()
                .u32(0)
                .unwrap()
                .bytes(&[1, 2, 3])
                .unwrap();
            e.into_writer()
        };
        assert_eq!(
            status_of(&link.exchange(&frame(cmd::IMAGE_DATA, &data)).unwrap()),
            Status::WrongState
        );
        assert_eq!(
            status_of(&link.exchange(&frame(cmd::IMAGE_END, &[0x80])).unwrap()),
            Status::WrongState
        );
        // Oversized announcements are refused before anything is erased.
        let begin = |upk: usize, enc: u32| {
            let mut e = minicbor::Encoder::new(Vec::new());
            e.array(3)
                .unwrap()
                .u8(0)
                .unwrap()
                .bytes(&vec![0xd2; upk])
                .unwrap()
                .u32(enc)
                .unwrap();
            frame(cmd::IMAGE_BEGIN, &e.into_writer())
        };
        assert_eq!(
            status_of(&link.exchange(&begin(0, 100)).unwrap()),
            Status::TooLarge
        );
        assert_eq!(
            status_of(&link.exchange(&begin(100, u32::MAX)).unwrap()),
            Status::TooLarge
        );
        // A UPK that is not one is refused before staging is touched.
        assert_eq!(
            status_of(&link.exchange(&begin(3000, 100)).unwrap()),
            Status::UpkMalformed
        );
        // Random garbage frames never panic and never succeed at changing state.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let kind = (x % 0x40) as u8;
            if kind == cmd::RESET || kind == cmd::IMAGE_BEGIN {
                continue;
            }
            let len = (x >> 8) as usize % 64;
            let payload: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            let _ = status_of(&link.exchange(&frame(kind, &payload)).unwrap());
        }
    }
    assert!(
        snapshot(&dev) == before,
        "refused frames changed the device"
    );
}
