//! The update server's HTTP heads, both ways (`trustchain_field::update`):
//! `read_request`, what the server reads from a client that passed the TLS
//! handshake, and `read_head` + `response_head`, what a device reads from
//! the server. An accepted request's path, sent again in a request of its
//! own, is read back the same; a response head's status and length,
//! written again, are read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_field::update::{read_head, read_request, response_head};

fuzz_target!(|data: &[u8]| {
    match read_request(&mut &data[..]) {
        Ok(path) => {
            assert!(!path.contains(' '));
            let again = format!("GET {path} HTTP/1.1\r\nHost: updates.example\r\n\r\n");
            assert_eq!(read_request(&mut again.as_bytes()), Ok(path));
        }
        Err((code, _)) => assert!(code == 400 || code == 405, "status {code}"),
    }
    if let Ok(head) = read_head(&mut &data[..], 4096) {
        assert!(head.ends_with("\r\n\r\n") && head.len() <= 4096);
        if let Some((status, length)) = response_head(&head) {
            let again = format!(
                "HTTP/1.1 {status} Whatever\r\n{}\r\n",
                length
                    .map(|n| format!("Content-Length: {n}\r\n"))
                    .unwrap_or_default()
            );
            assert_eq!(response_head(&again), Some((status, length)));
        }
    }
});
