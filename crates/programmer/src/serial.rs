//! The connection protocol over a byte stream: a serial port, or the
//! stdin/stdout of an emulator whose UART is on stdio (`qemu-system-arm
//! -serial stdio`). Frames carry their own length, so a response is read
//! as its header ([`Frame::total_len`]) and then exactly the rest.
//!
//! Reads block without a timeout: a device that stops answering stalls the
//! programmer until the stream closes (the emulator exits, the port goes
//! away), which then is an [`Error::Transport`].
use std::io::{Read, Write};

use trustchain_formats::frame::{Frame, HEADER_LEN};

use crate::client::{Error, Transport};

/// A device behind a byte stream: `rx` carries its responses, `tx` our
/// requests.
#[derive(Debug)]
pub struct SerialLink<R: Read, W: Write> {
    rx: R,
    tx: W,
}

impl<R: Read, W: Write> SerialLink<R, W> {
    /// Over the two directions of a stream.
    pub fn new(rx: R, tx: W) -> Self {
        Self { rx, tx }
    }

    /// The two directions back.
    pub fn into_inner(self) -> (R, W) {
        (self.rx, self.tx)
    }
}

fn link_error(what: &str, e: std::io::Error) -> Error {
    let hint = if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ": the device closed the link (did it stop or reset?)"
    } else {
        ""
    };
    Error::Transport(format!("{what}: {e}{hint}"))
}

impl<R: Read, W: Write> Transport for SerialLink<R, W> {
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, Error> {
        self.tx
            .write_all(request)
            .and_then(|()| self.tx.flush())
            .map_err(|e| link_error("sending a request", e))?;
        let mut header = [0u8; HEADER_LEN];
        self.rx
            .read_exact(&mut header)
            .map_err(|e| link_error("reading a response header", e))?;
        // An unframed header leaves the stream unsynchronised: give up
        // rather than guess where the next frame starts.
        let total = Frame::total_len(&header)
            .map_err(|e| Error::BadResponse(format!("response header {header:02x?}: {e}")))?;
        let mut frame = vec![0u8; total];
        frame[..HEADER_LEN].copy_from_slice(&header);
        self.rx
            .read_exact(&mut frame[HEADER_LEN..])
            .map_err(|e| link_error("reading a response", e))?;
        Ok(frame)
    }
}
