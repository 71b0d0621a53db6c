//! Secure updates over the network (issue 5, point 3): the update server and
//! the device's fetch.
//!
//! **Server** ([`UpdateServer`]): HTTP/1.1 over TLS 1.3 with mutual
//! authentication ([`crate::tls`]). Only a client whose certificate chains to
//! the OEM root (id-kp-clientAuth) and is on no CRL gets past the handshake.
//! It then gets the newest release (highest security counter) of its own
//! product (the product ID extension of its certificate), or the release
//! mastered for it alone in `RELEASE_DIR/devices/<UID hex>/` (the UID is the
//! certificate subject's serialNumber, as the default template writes it).
//! Releases are verified against the root when the server starts, never
//! decrypted: the server holds no key that opens them. Routes (docs/formats.md
//! §20): `GET /v1/release/update.upk`, `GET /v1/release/update.enc`,
//! `GET /v1/release/info` (JSON).
//!
//! **Device** ([`fetch`]): the application's path. It opens a TLS session
//! with its certificate chain (the SBM signs the handshake), trusts only the
//! OEM root it holds for the server, downloads the UPK (at most 16 KiB), reads
//! the signed size, version and digest from it, refuses a rollback before
//! downloading anything more, downloads `update.enc` bounded by the signed
//! size (more is *endless data*, less is a *truncated download*), checks the
//! signed ciphertext digest (a UPK with another release's image is
//! *mix-and-match*), and only then stages the release through the SBM, which
//! verifies the UPK's signature and targeting before it writes a byte and
//! records the update request. The signature table and the running
//! application are untouched until the next reset, when the SBM verifies
//! and installs. A refusal at any step leaves the device byte-identical.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateRevocationListDer, ServerName};
use trustchain_device_sim::SimDevice;
use trustchain_formats::upk::{limits::MAX_UPK_LEN, Upk};
use trustchain_oem::crypto::sha256;
use trustchain_programmer::client::Programmer;
use trustchain_programmer::sim::SimLink;

use crate::tls;

/// The longest request head the server reads.
const MAX_REQUEST_HEAD: usize = 4096;
/// The longest response head the device reads.
const MAX_RESPONSE_HEAD: usize = 4096;
/// Socket timeouts: a peer that stalls is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One release the server can hand out.
#[derive(Debug, Clone)]
pub struct Served {
    /// Where it came from.
    pub dir: PathBuf,
    /// What `verify` says about it.
    pub info: trustchain_oem::release::ReleaseInfo,
    upk: Arc<Vec<u8>>,
    enc: Arc<Vec<u8>>,
}

/// What the server serves: the newest release per product, and per-device releases.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Newest release of each product.
    pub newest: BTreeMap<u32, Served>,
    /// Per-device releases, by UID (lowercase hex).
    pub devices: BTreeMap<String, Served>,
}

fn load_release(dir: &Path, root_der: &[u8]) -> Result<Served, String> {
    let info = trustchain_oem::release::verify_release(dir, root_der)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    Ok(Served {
        dir: dir.to_path_buf(),
        upk: Arc::new(read("update.upk")?),
        enc: Arc::new(read("update.enc")?),
        info,
    })
}

impl Catalogue {
    /// Loads `dir`: a release directory, or a directory of release
    /// directories, and optionally `dir/devices/<UID hex>/` per-device
    /// releases. Every release is verified against `root_der` (signature by a
    /// mastering certificate of that root, signed size and digest).
    pub fn load(dir: &Path, root_der: &[u8]) -> Result<Self, String> {
        let mut cat = Catalogue::default();
        let mut offer = |s: Served| {
            let slot = cat
                .newest
                .entry(s.info.product_id)
                .or_insert_with(|| s.clone());
            if s.info.security_counter > slot.info.security_counter {
                *slot = s;
            }
        };
        if dir.join("update.upk").exists() {
            offer(load_release(dir, root_der)?);
        } else {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("update.upk").exists())
                .collect();
            dirs.sort();
            for d in dirs {
                offer(load_release(&d, root_der)?);
            }
        }
        let per_device = dir.join("devices");
        if per_device.is_dir() {
            let entries = std::fs::read_dir(&per_device)
                .map_err(|e| format!("{}: {e}", per_device.display()))?;
            for e in entries.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_ascii_lowercase();
                if name.is_empty() || name.len() > 64 || hex::decode(&name).is_err() {
                    return Err(format!(
                        "{}: per-device releases go in directories named by the device UID in hex",
                        e.path().display()
                    ));
                }
                cat.devices.insert(name, load_release(&e.path(), root_der)?);
            }
        }
        if cat.newest.is_empty() && cat.devices.is_empty() {
            return Err(format!(
                "{}: no release here (a directory with update.upk + update.enc, or a directory of them)",
                dir.display()
            ));
        }
        Ok(cat)
    }

    fn for_device(&self, uid: Option<&str>, product: Option<u32>) -> Option<&Served> {
        uid.and_then(|u| self.devices.get(u))
            .or_else(|| product.and_then(|p| self.newest.get(&p)))
    }
}

/// How the server is set up.
pub struct ServerOptions {
    /// The releases.
    pub catalogue: Catalogue,
    /// The OEM root that client certificates must chain to.
    pub root_der: Vec<u8>,
    /// CRLs to honour.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The server's certificate chain (leaf first).
    pub chain: Vec<Vec<u8>>,
    /// The server's key.
    pub key: Arc<dyn trustchain_oem::keystore::Signer>,
    /// Where to listen.
    pub listen: SocketAddr,
}

/// What the server counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered 200.
    pub served: AtomicU64,
    /// Handshakes refused (bad, unknown, expired or revoked client certificates).
    pub refused: AtomicU64,
    /// Other errors (bad requests, I/O).
    pub errors: AtomicU64,
}

/// A running update server.
pub struct UpdateServer {
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    catalogue: Arc<Catalogue>,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl UpdateServer {
    /// Binds the listening socket and builds the TLS configuration.
    pub fn bind(opts: ServerOptions) -> Result<Self, String> {
        let config = tls::server_config(
            &opts.root_der,
            opts.crls,
            &opts.chain,
            tls::KeystoreKey(opts.key),
        )?;
        let listener =
            TcpListener::bind(opts.listen).map_err(|e| format!("--listen {}: {e}", opts.listen))?;
        Ok(Self {
            listener,
            config,
            catalogue: Arc::new(opts.catalogue),
            stats: Arc::new(Stats::default()),
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `stop` is set (checked between connections), one thread
    /// per connection; `log` gets one line per connection.
    pub fn serve(&self, stop: &AtomicBool, log: &(dyn Fn(String) + Sync)) {
        std::thread::scope(|scope| {
            for conn in self.listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let config = self.config.clone();
                let cat = self.catalogue.clone();
                let stats = self.stats.clone();
                scope.spawn(move || {
                    let peer = tcp
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| "?".into());
                    match handle(tcp, config, &cat, &stats) {
                        Ok(line) => log(format!("{peer}: {line}")),
                        Err(e) => log(format!("{peer}: {e}")),
                    }
                });
            }
        });
    }

    /// Wakes a [`serve`](Self::serve) loop blocked in `accept` after `stop` was set.
    pub fn wake(addr: SocketAddr) {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
}

/// The device's identity as its certificate states it: (UID hex, product ID, serial hex).
fn client_identity(leaf: &[u8]) -> (Option<String>, Option<u32>, String) {
    let Ok(cert) = trustchain_oem::pki::parse_cert(leaf) else {
        return (None, None, "?".into());
    };
    let uid = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid.to_string() == "2.5.4.5")
        .and_then(|atv| {
            atv.value
                .decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .ok()
        })
        .map(|s| s.to_ascii_lowercase());
    let product = trustchain_oem::pki::cert_product_id(&cert).map(|p| p.get());
    let serial = hex::encode(cert.tbs_certificate.serial_number.as_bytes());
    (uid, product, serial)
}

fn handle(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    cat: &Catalogue,
    stats: &Stats,
) -> Result<String, String> {
    tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to its end: the client certificate is checked here.
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            let why = tls::tls_error(&e)
                .map(tls::describe)
                .unwrap_or_else(|| e.to_string());
            linger(&mut tls);
            if tls::tls_error(&e).is_some() {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(format!("refused: {why}"));
            }
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!("handshake: {why}"));
        }
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or("no client certificate")?;
    let (uid, product, serial) = client_identity(&leaf);
    let path = match read_request(&mut tls) {
        Ok(p) => p,
        Err((code, why)) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let _ = respond(&mut tls, code, "text/plain", why.as_bytes());
            return Err(format!("device {serial}: {code} {why}"));
        }
    };
    let Some(rel) = cat.for_device(uid.as_deref(), product) else {
        let why = format!("no release for product {product:?}");
        let _ = respond(&mut tls, 404, "text/plain", why.as_bytes());
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return Err(format!("device {serial}: 404 {why}"));
    };
    let (ctype, body): (&str, Vec<u8>) = match path.as_str() {
        "/v1/release/update.upk" => ("application/cose", rel.upk.to_vec()),
        "/v1/release/update.enc" => ("application/octet-stream", rel.enc.to_vec()),
        "/v1/release/info" => (
            "application/json",
            serde_json::to_vec(&rel.info).unwrap_or_default(),
        ),
        other => {
            let why = format!("no such resource {other}");
            let _ = respond(&mut tls, 404, "text/plain", why.as_bytes());
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!("device {serial}: 404 {why}"));
        }
    };
    respond(&mut tls, 200, ctype, &body).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    stats.served.fetch_add(1, Ordering::Relaxed);
    Ok(format!(
        "device {serial} (UID {}): 200 {path} ({} bytes, release {})",
        uid.as_deref().unwrap_or("?"),
        body.len(),
        rel.info.version
    ))
}

/// After a refused handshake: sends the queued alert, closes our side and
/// drains what the client still sends for a moment, so that the close is
/// not a reset that would destroy the alert before the client reads it.
fn linger(tls: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) {
    while tls.conn.wants_write() {
        if tls.conn.write_tls(&mut tls.sock).is_err() {
            return;
        }
    }
    let _ = tls.sock.shutdown(std::net::Shutdown::Write);
    let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match tls.sock.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads `GET <path> HTTP/1.1` and the header lines, bounded; returns the
/// path, or the status code and reason to answer with. Public for the fuzz
/// target (`fuzz/fuzz_targets/http_head.rs`): the server reads this from
/// any client that passed the TLS handshake.
pub fn read_request(tls: &mut impl Read) -> Result<String, (u16, String)> {
    let head = read_head(tls, MAX_REQUEST_HEAD).map_err(|e| (400, e))?;
    let first = head.lines().next().unwrap_or_default();
    let mut parts = first.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(path), Some("HTTP/1.1" | "HTTP/1.0"), None) => Ok(path.to_string()),
        (Some(m), Some(_), Some(_), None) if m != "GET" => {
            Err((405, format!("method {m} not allowed")))
        }
        _ => Err((400, "malformed request line".into())),
    }
}

/// Reads up to the blank line ending an HTTP head, at most `max` bytes.
pub fn read_head(r: &mut impl Read, max: usize) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= max {
            return Err(format!("HTTP head longer than {max} bytes"));
        }
        match r.read(&mut byte) {
            Ok(0) => return Err("connection closed in the HTTP head".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    String::from_utf8(head).map_err(|_| "HTTP head is not UTF-8".into())
}

fn respond(w: &mut impl Write, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

/// Why a fetch failed. Every variant leaves the device unchanged.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The device cannot take part (not provisioned, files).
    #[error("{0}")]
    Device(String),
    /// The URL is not `https://HOST[:PORT]`.
    #[error("--server {0}: expected https://HOST[:PORT]")]
    Url(String),
    /// Connecting failed.
    #[error("cannot reach {url}: {why}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        why: String,
    },
    /// The TLS handshake failed: the server refused the device, or the device the server.
    #[error("TLS with {url}: {why}")]
    Tls {
        /// The server.
        url: String,
        /// Why.
        why: String,
    },
    /// The server answered with an error status.
    #[error("{url}{path}: the server answered {status}: {body}")]
    Status {
        /// The server.
        url: String,
        /// The resource.
        path: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        body: String,
    },
    /// The UPK does not parse.
    #[error("the server's update.upk does not parse: {0}")]
    BadUpk(String),
    /// The offered release is older than what the device accepts.
    #[error("rollback refused: the server offers {offered} (security counter {counter}), the device's minimum is {minimum}")]
    Rollback {
        /// Offered version.
        offered: String,
        /// Its counter.
        counter: u64,
        /// The device's minimum.
        minimum: u64,
    },
    /// The server streamed more than the signed size.
    #[error("endless data: the server sent more than the {signed} bytes the UPK signs")]
    EndlessData {
        /// The signed size.
        signed: u64,
    },
    /// The download ended before the signed size.
    #[error("truncated download: {got} of the {signed} bytes the UPK signs")]
    Truncated {
        /// What arrived.
        got: u64,
        /// The signed size.
        signed: u64,
    },
    /// `update.enc` is not the one the UPK signs.
    #[error(
        "mix-and-match: update.enc (SHA-256 {got}) is not the image this UPK signs ({signed})"
    )]
    MixAndMatch {
        /// Its digest.
        got: String,
        /// The signed digest.
        signed: String,
    },
    /// The SBM refused the release (signature, OEM, product, UID, rollback …).
    #[error("the SBM refused the release: {} (status {})", .0.describe(), *.0 as u8)]
    Refused(trustchain_sbm::Status),
    /// Another protocol failure.
    #[error("{0}")]
    Other(String),
}

/// What a fetch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    /// The staged version.
    pub version: String,
    /// Its security counter.
    pub security_counter: u64,
    /// Bytes of `update.enc` downloaded.
    pub size: u64,
    /// `false` when the device already runs this release (only the UPK was
    /// downloaded, nothing staged).
    pub staged: bool,
}

fn parse_url(url: &str) -> Result<(String, String), FetchError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| FetchError::Url(url.into()))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(FetchError::Url(url.into()));
    }
    let (host, addr) = if let Some(h) = rest.strip_prefix('[') {
        let (h, port) = h
            .split_once(']')
            .ok_or_else(|| FetchError::Url(url.into()))?;
        let port = port.strip_prefix(':').unwrap_or("443");
        (h.to_string(), format!("[{h}]:{port}"))
    } else {
        match rest.rsplit_once(':') {
            Some((h, _)) => (h.to_string(), rest.to_string()),
            None => (rest.to_string(), format!("{rest}:443")),
        }
    };
    Ok((host, addr))
}

/// The status code and the `Content-Length` (if any, and if a number) of a
/// response head as [`read_head`] returns it; `None` if the status line has
/// no numeric code. Public for the fuzz target
/// (`fuzz/fuzz_targets/http_head.rs`): the device reads this from the server.
pub fn response_head(head: &str) -> Option<(u16, Option<u64>)> {
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())?;
    let length: Option<u64> = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Some((status, length))
}

/// One GET over a fresh TLS session; the body is read up to `limit` bytes
/// (`Content-Length` above it is refused before reading, and so is a
/// stream that runs past it).
fn get(
    config: &Arc<rustls::ClientConfig>,
    url: &str,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let (host, addr) = parse_url(url)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| FetchError::Url(url.into()))?;
    let tcp = TcpStream::connect(&addr).map_err(|e| FetchError::Connect {
        url: url.into(),
        why: e.to_string(),
    })?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| FetchError::Tls {
            url: url.into(),
            why: e.to_string(),
        })?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let tls_err = |e: std::io::Error| match tls::tls_error(&e) {
        Some(t) => FetchError::Tls {
            url: url.into(),
            why: tls::describe(t),
        },
        None => FetchError::Connect {
            url: url.into(),
            why: e.to_string(),
        },
    };
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trustchain-device\r\nConnection: close\r\n\r\n"
    )
    .and_then(|_| tls.flush())
    .map_err(|e| {
        // The server may have refused our certificate and closed before the
        // request went out: its alert is waiting to be read.
        let mut byte = [0u8; 1];
        match tls.read(&mut byte) {
            Err(alert) if tls::tls_error(&alert).is_some() => tls_err(alert),
            _ => tls_err(e),
        }
    })?;
    let mut reader = BufReader::new(tls);
    // A refused client certificate shows up as an alert on the first read.
    reader.fill_buf().map_err(tls_err)?;
    let head = read_head(&mut reader, MAX_RESPONSE_HEAD)
        .map_err(|why| FetchError::Other(format!("{url}{path}: {why}")))?;
    let (status, length) = response_head(&head)
        .ok_or_else(|| FetchError::Other(format!("{url}{path}: not an HTTP response")))?;
    if status != 200 {
        let mut body = Vec::new();
        let _ = reader.take(1024).read_to_end(&mut body);
        return Err(FetchError::Status {
            url: url.into(),
            path: path.into(),
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    if let Some(n) = length {
        if n > limit {
            return Err(FetchError::EndlessData { signed: limit });
        }
    }
    let mut body = Vec::new();
    let want = length.unwrap_or(limit + 1);
    let mut chunk = [0u8; 16 * 1024];
    while (body.len() as u64) < want {
        let room = (want - body.len() as u64).min(chunk.len() as u64) as usize;
        match reader.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            // The peer closed without close_notify: the end of what it sent.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(tls_err(e)),
        }
    }
    if body.len() as u64 > limit {
        return Err(FetchError::EndlessData { signed: limit });
    }
    if let Some(n) = length {
        if (body.len() as u64) < n {
            return Err(FetchError::Truncated {
                got: body.len() as u64,
                signed: n,
            });
        }
    }
    Ok(body)
}

/// Downloads a release as the device's application would and returns the
/// UPK and `update.enc` after the application's checks (size bound,
/// rollback against `min_counter`, signed ciphertext digest). When the UPK
/// names the image the device already runs (`running`: its digest and
/// counter), `update.enc` is not downloaded (`None`). The TLS client's
/// signatures are requested through `key`'s mailbox.
pub fn download(
    config: &Arc<rustls::ClientConfig>,
    url: &str,
    min_counter: u64,
    running: Option<([u8; 32], u64)>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), FetchError> {
    let upk = get(config, url, "/v1/release/update.upk", MAX_UPK_LEN as u64)?;
    let parsed = Upk::parse(&upk).map_err(|e| FetchError::BadUpk(e.to_string()))?;
    let m = &parsed.manifest;
    if m.security_counter.0 < min_counter {
        return Err(FetchError::Rollback {
            offered: m.version.to_string(),
            counter: m.security_counter.0,
            minimum: min_counter,
        });
    }
    if running == Some((m.image_digest.0, m.security_counter.0)) {
        return Ok((upk, None));
    }
    let signed = m.ciphertext_size();
    let signed_digest = m.ciphertext_digest.0;
    let enc = get(config, url, "/v1/release/update.enc", signed)?;
    if (enc.len() as u64) < signed {
        return Err(FetchError::Truncated {
            got: enc.len() as u64,
            signed,
        });
    }
    let got = sha256(&enc);
    if got != signed_digest {
        return Err(FetchError::MixAndMatch {
            got: hex::encode(got),
            signed: hex::encode(signed_digest),
        });
    }
    Ok((upk, Some(enc)))
}

fn link_err(e: trustchain_programmer::client::Error) -> FetchError {
    match e {
        trustchain_programmer::client::Error::Refused(s) => FetchError::Refused(s),
        other => FetchError::Device(other.to_string()),
    }
}

/// `trustchain device fetch`: downloads the newest release from `url` into
/// the device's staging area through the SBM and requests the update; the
/// next boot applies it. The device is saved only when the SBM accepted the
/// release.
pub fn fetch(device_dir: &Path, url: &str) -> Result<Fetched, FetchError> {
    let mut dev = SimDevice::open(device_dir).map_err(|e| FetchError::Device(e.to_string()))?;
    let (chain, root, installed, min_counter) = {
        let mut prog =
            Programmer::new(SimLink::new(&mut dev).map_err(|e| FetchError::Device(e.to_string()))?);
        let (chain, root) = prog.cert_chain().map_err(link_err)?;
        let (installed, min) = prog.signature_table().map_err(link_err)?;
        (chain, root, installed, min)
    };
    let (key, requests) = tls::SbmKey::new();
    let config = tls::client_config(&root, &chain, key).map_err(FetchError::Device)?;
    let url_owned = url.to_string();
    // The TLS stack runs on its own thread; this one owns the device and
    // answers its signing requests through the SBM.
    let running = installed.map(|i| (i.digest, i.counter));
    let worker = std::thread::spawn(move || download(&config, &url_owned, min_counter, running));
    {
        let mut prog =
            Programmer::new(SimLink::new(&mut dev).map_err(|e| FetchError::Device(e.to_string()))?);
        for req in requests.iter() {
            let answer = prog
                .sign_tls13_client(&req.hash)
                .map_err(|e| format!("SBM: {e}"));
            let _ = req.reply.send(answer);
        }
    }
    let (upk, enc) = worker
        .join()
        .map_err(|_| FetchError::Other("the download thread panicked".into()))??;
    let parsed = Upk::parse(&upk).map_err(|e| FetchError::BadUpk(e.to_string()))?;
    let m = &parsed.manifest;
    let version = m.version.to_string();
    let counter = m.security_counter.0;
    let Some(enc) = enc else {
        return Ok(Fetched {
            version,
            security_counter: counter,
            size: 0,
            staged: false,
        });
    };
    {
        let mut prog =
            Programmer::new(SimLink::new(&mut dev).map_err(|e| FetchError::Device(e.to_string()))?);
        prog.send_release(&upk, &enc, true, &mut |_, _| {})
            .map_err(link_err)?;
    }
    dev.save().map_err(|e| FetchError::Device(e.to_string()))?;
    Ok(Fetched {
        version,
        security_counter: counter,
        size: enc.len() as u64,
        staged: true,
    })
}
