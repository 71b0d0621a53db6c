//! Command-line arguments. Every command says which step of the supply
//! chain it belongs to.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "trustchain: a supply chain of trust for microcontroller products";

const LONG_ABOUT: &str = "\
trustchain: a supply chain of trust for microcontroller products, from the OEM's desk to \
the device in the field.

The chain, and the commands for each step:
  1. Secure development (OEM)   oem init (key hierarchy), oem product (product key, certificate
                                template); device provision (lab devices, at the OEM)
  2. Secure mastering (OEM)     master; then verify (anyone), inspect (anyone), decrypt (OEM)
  3. The device                 device new / info / provision / install / boot / update: a
                                simulated MCU with the Secure Boot Manager (SBM)
  4. Secure production          wrap (OEM) -> guardian init / trust / import / jobs / log, produce,
                                report (programming centre) -> oem reconcile (OEM)
  5. In the field               auth (device to device); oem server-cert, update-server, device
                                fetch (updates over mutual TLS); oem revoke (CRLs)

Private keys never leave the sealed keystore (or the PKCS#11 token) in the clear. Commands that \
need them ask for the secret that unlocks the directory's keys: the keystore passphrase, or the \
token's user PIN for a directory made with --pkcs11-module. It comes from --passphrase-file FILE, \
else the TRUSTCHAIN_PASSPHRASE environment variable, else a prompt on the terminal. Commands that \
only read public material (verify, inspect, oem reconcile, guardian trust / jobs / log, device \
new / info / install / boot / update / fetch, auth) need no secret.

Try `trustchain demo` to run the chain end to end in a temporary directory; docs/guide.md walks \
an OEM and a programming centre through a production run.";

/// trustchain.
#[derive(Debug, Parser)]
#[command(name = "trustchain", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Read the secret that unlocks a directory's keys from the first line of FILE: the
    /// keystore passphrase, or, for an OEM or Guardian directory bound to a PKCS#11 token
    /// (`init --pkcs11-module`), the token's user PIN. For `update-server`, the passphrase of
    /// the server identity's keystore. Takes precedence over TRUSTCHAIN_PASSPHRASE; without
    /// either, you are asked on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Log more (-v: info, -vv: debug) on stderr. Secrets are never logged.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// At the OEM: the key hierarchy and products (secure development); reconciling production
    /// reports (secure production); update-server identities and revocation (in the field).
    #[command(subcommand)]
    Oem(OemCommand),
    /// Secure mastering, at the OEM: encrypt and sign a firmware image into DIR/update.upk +
    /// DIR/update.enc.
    ///
    /// The image (raw binary, Intel HEX or ELF) is encrypted under a fresh AES-128 key in
    /// authenticated 4 KiB chunks. The Update Key Block (UPK) carries that key wrapped for the
    /// product key (and each --device key), the version, the anti-rollback security counter and
    /// the digests, and is signed with the mastering key. Only the holder of the keystore
    /// passphrase (or the token's PIN) can master; every mastering is appended to
    /// OEM_DIR/audit.log.
    ///
    /// Reads OEM_DIR (mastering key, OEM_DIR/products/<N>/) and the image; writes DIR, which
    /// must not exist (its parent must). The two files need no protection on the way (the image
    /// is encrypted, the UPK signed): give them to programming centres (`wrap` puts them into a
    /// production package) and update servers. Check them with `verify`; for the simulated
    /// device, master for --load-address 0x08000000.
    Master(MasterArgs),
    /// Anyone, at any step: show what an artifact holds (UPK, certificate, public key, sealed key,
    /// keystore, template, audit log, production package, production report). Verifies nothing;
    /// see `verify` and `oem reconcile`.
    ///
    /// Reads one file and writes nothing; needs no key and no secret. A sealed key or a package
    /// shows only its public header: its contents stay sealed.
    Inspect {
        /// The file (a PEM file: one certificate or key).
        file: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure mastering, checked by anyone (OEM, programming centre, update server): check a
    /// release without decrypting it.
    ///
    /// Checks that DIR/update.upk is signed by a mastering certificate that chains to ROOT.pem
    /// (code-signing usage, valid now, same OEM ID), and that DIR/update.enc has exactly the
    /// signed size and SHA-256. Needs no key and no passphrase; writes nothing. Exits non-zero
    /// and names the problem if anything does not match.
    Verify {
        /// The release directory (update.upk + update.enc).
        dir: PathBuf,
        /// The OEM root certificate (PEM or DER) to trust.
        #[arg(long, value_name = "ROOT.pem")]
        root: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure mastering, at the OEM: recover the plaintext of a release with the product key,
    /// checking every chunk and the signed digest.
    ///
    /// Reads OEM_DIR (the product key, unlocked with the passphrase or token PIN) and the release
    /// directory; writes only FILE. Use it to check that a release holds the image you meant.
    Decrypt {
        /// The OEM directory holding the product key.
        oem_dir: PathBuf,
        /// The release directory (update.upk + update.enc).
        dir: PathBuf,
        /// Where to write the image (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, at the OEM: wrap what one Guardian needs to produce devices of a
    /// product (the OEM Secret Wrapping Tool).
    ///
    /// The package carries a per-package issuing CA (certified by the OEM device CA), the OEM
    /// root and chain, the certificate template, the production count and serial range, the
    /// allowed device types and UIDs, the product key and the mastered release. It is signed by
    /// the OEM device CA, names the target Guardian, and is encrypted to that Guardian's
    /// key-agreement key: only that Guardian can open it.
    ///
    /// Reads OEM_DIR (unlocked with the passphrase or token PIN), the Guardian's identity.pem
    /// (check its Guardian ID, the SHA-256 of its first certificate, with the centre over
    /// another channel) and the release. Writes PACKAGE, which may travel over any channel;
    /// keeps the package's issuing CA in OEM_DIR/packages/<id>.issuing-ca.pem and its key in the
    /// keystore (for `oem reconcile` and `oem revoke`); appends to OEM_DIR/audit.log.
    Wrap(WrapArgs),
    /// Secure production, at the programming centre: the Guardian, the HSM that alone opens the
    /// OEM's packages (create it, trust OEM roots, import packages, list jobs, verify its log).
    #[command(subcommand)]
    Guardian(GuardianCommand),
    /// Secure production, at the programming centre: provision and program devices for a job.
    ///
    /// For each device: check its type and UID against the job, have it generate its keys,
    /// issue its certificate inside the Guardian (one unit of the job's count, recorded before
    /// it leaves), store the chain and OEM root, deliver the product key wrapped to the device's
    /// own key, lock it, then program the release through the SBM and check that it boots.
    /// Creates blank simulated devices under DIR as needed (or takes the blank ones there).
    ///
    /// Unlocks GUARDIAN_DIR with its passphrase (or token PIN); the station itself only handles
    /// public material and ciphertext. The job's count holds across threads and concurrent runs.
    /// Prints, for this run: devices provisioned, programmed and failed, and what the job has
    /// left. A device that failed after its certificate was issued still counts against the job
    /// and appears in the report. When the job runs out, the run produces what it can and exits
    /// non-zero; ask the OEM for a new package. Exits non-zero too if any device failed.
    Produce(ProduceArgs),
    /// Secure production, at the programming centre: the Guardian signs a report of a job for
    /// the OEM (one record per certified device, and the job's hash-chained log).
    ///
    /// Reads the job from GUARDIAN_DIR/guardian.db and signs with the Guardian's signing key
    /// (unlocked with its passphrase or token PIN); writes REPORT. Send REPORT to the OEM, who
    /// checks it with `trustchain oem reconcile`. It can be made at any time; a report made
    /// before the job ends covers the devices certified so far.
    Report {
        /// The Guardian directory.
        guardian_dir: PathBuf,
        /// The job (see `trustchain guardian jobs`).
        #[arg(long, value_name = "ID")]
        job: i64,
        /// The report file to write (must not exist).
        #[arg(long, value_name = "REPORT")]
        out: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The device: a simulated MCU with the Secure Boot Manager (create, show, provision in the
    /// lab, install, boot, update, fetch in the field), driven through the SBM's connection
    /// protocol.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// In the field, at the OEM or its cloud: serve the newest release to devices over mutual TLS.
    ///
    /// Only a device whose certificate chains to ROOT.pem (client-auth usage) and is on no CRL
    /// of --crl gets past the TLS handshake; it then gets the newest release of its own product
    /// in --release (a release directory, or a directory of them; a release mastered for one
    /// device alone goes in RELEASE_DIR/devices/<UID hex>/). Releases are verified against the
    /// root at start and never decrypted: the server holds no key that opens them. The server
    /// presents the identity made by `trustchain oem server-cert`; the passphrase of that
    /// identity's keystore comes from --passphrase-file, TRUSTCHAIN_PASSPHRASE or the prompt.
    /// The server needs neither the OEM directory nor its secret. Prints the address it listens
    /// on; runs until interrupted; one log line per connection on stderr.
    UpdateServer(UpdateServerArgs),
    /// In the field: two provisioned devices authenticate each other (docs/formats.md §19).
    ///
    /// DEVICE_A sends its certificate chain and a fresh nonce; DEVICE_B validates the chain to
    /// the OEM root it holds (in its SBM), checks OEM and product (and revocation with --crl),
    /// and answers with its own chain, nonce and signature over the transcript; A does the same
    /// checks and signs. Private keys stay in the SBMs; nothing is written to either device.
    /// Prints both identities and the outcome; a refusal names its reason and exits non-zero.
    /// Needs no secret. Give the OEM's CRLs (OEM_DIR/crl.pem, from `oem revoke`) with --crl to
    /// refuse revoked peers.
    Auth(crate::auth::AuthArgs),
    /// Run the supply chain end to end on the embedded defaults, in a temporary directory,
    /// and print what it made.
    ///
    /// With a built-in firmware image and a throw-away passphrase (printed; nothing is asked
    /// for): OEM keys and a product; mastering, verify, inspect, decrypt; a simulated device
    /// provisioned in the lab, installed, booted and updated; a tampered image and a rollback
    /// refused; a Guardian, a wrapped package, production of 3 devices against its count,
    /// report and reconciliation; device-to-device authentication; an update over mutual TLS;
    /// revocation. Touches nothing outside its directory; exits non-zero if a step fails.
    Demo {
        /// Keep the outputs in DIR (must not exist) instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

/// `trustchain oem ...`.
#[derive(Debug, Subcommand)]
pub enum OemCommand {
    /// Secure development, at the OEM: create the OEM key hierarchy in OEM_DIR (which must not
    /// exist).
    ///
    /// Makes a self-signed root CA, a device-issuing CA and a mastering (image-signing)
    /// certificate, all ECDSA P-256 and carrying the OEM ID: OEM_DIR/root.pem,
    /// OEM_DIR/device-ca.pem, OEM_DIR/mastering.pem, with oem.toml, an empty products/ and
    /// audit.log. The private keys are sealed in OEM_DIR/keystore under the passphrase
    /// (Argon2id + AES-256-GCM); at the prompt it is asked twice. Prints the root's SHA-256
    /// fingerprint: give root.pem to programming centres, update servers and anyone who checks
    /// releases, and confirm that fingerprint with them over another channel. OEM_DIR and its
    /// passphrase (or token) stay at the OEM.
    ///
    /// With --pkcs11-module and --token, the root CA, device CA and mastering keys are
    /// generated inside the PKCS#11 token (an HSM) and never leave it: CA signing and mastering
    /// happen in the token. Product keys must travel (to every device, into every production
    /// package), so they stay sealed files in OEM_DIR/keystore, under a key the token holds.
    /// oem.toml records the module and token label (never the PIN); later commands find the
    /// token by themselves and ask for its user PIN where they ask for the passphrase
    /// (--passphrase-file FILE, TRUSTCHAIN_PASSPHRASE, or the prompt). One token per directory.
    Init {
        /// The directory to create.
        oem_dir: PathBuf,
        /// The OEM's numeric ID (1 to 4294967295, decimal or 0x-hex), put in every certificate and
        /// UPK.
        #[arg(long, value_name = "N")]
        oem_id: trustchain_oem::formats::OemId,
        /// The OEM's name, used in certificate subjects.
        #[arg(long)]
        name: String,
        /// Keep the keys in a PKCS#11 token instead of the sealed keystore.
        #[command(flatten)]
        token: TokenArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure development, at the OEM: create a product: its key-agreement key (images are
    /// encrypted to it) and its device certificate template.
    ///
    /// Writes OEM_DIR/products/<N>/: product.toml, product-key.pem (the public key) and
    /// template.toml (the --template file, or the default, checked and written in canonical
    /// form; to change what devices get, write your own before creating the product). The
    /// private product key is sealed in OEM_DIR/keystore (also with a token: it travels,
    /// wrapped, into every production package and device). Needs the passphrase or token PIN;
    /// recorded in OEM_DIR/audit.log.
    Product {
        /// The OEM directory.
        oem_dir: PathBuf,
        /// The product's numeric ID (1 to 4294967295).
        #[arg(long, value_name = "N")]
        product_id: trustchain_oem::formats::ProductId,
        /// The product's name ({product_name} in the template).
        #[arg(long)]
        name: String,
        /// A device certificate template (TOML, docs/formats.md §5: validity, key usages, subject
        /// fields with {serial}, {uid}, {oem_id}, {product_id}, {oem_name}, {product_name}); a
        /// default one otherwise.
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, back at the OEM: check a Guardian's signed report against what the OEM
    /// wrapped.
    ///
    /// Checks the signature and that it is the Guardian the package was wrapped for, issued <=
    /// count, every certificate accounted for and issued by the package's CA, serials in range,
    /// no duplicate serial or UID, the log chain intact. Then against every report reconciled
    /// before (OEM_DIR/reports/): all of a package's reports come from one job (a second job
    /// means the package was imported twice: replayed, or the Guardian's database restored), a
    /// serial keeps its certificate, the package's certificates together stay within the
    /// count, and no device UID has a certificate in two reports (a clone, or a device
    /// produced twice). Prints each anomaly (ANOMALY: ...) on its own line and exits non-zero
    /// if there is any.
    ///
    /// Reads the report and, from OEM_DIR, the audit log's record of the wrap,
    /// OEM_DIR/packages/<id>.issuing-ca.pem and the reports kept before. A report that
    /// reconciles is kept in OEM_DIR/reports/ and recorded in the audit log (again: nothing
    /// new; --no-keep: checked only); one with anomalies changes nothing. Needs no secret.
    Reconcile {
        /// The OEM directory that wrapped the package.
        oem_dir: PathBuf,
        /// The report file (from `trustchain report`).
        report: PathBuf,
        /// Check only: do not keep the report (nothing is written; later reports are not
        /// checked against it).
        #[arg(long)]
        no_keep: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// In the field, at the OEM: revoke a device certificate (or a package's issuing CA, which
    /// revokes every device produced from that package) with a signed X.509 CRL, or keep the
    /// CRLs current with --refresh.
    ///
    /// --cert: adds the certificate to its issuer's CRL in OEM_DIR/crl/ (signed by the device
    /// CA, or by the package's issuing CA key that `wrap` keeps), raises the CRL number, and
    /// rewrites OEM_DIR/crl.pem, the bundle to give update servers (`update-server --crl`) and
    /// devices (`auth --crl`).
    ///
    /// Each CRL is current for --days (its nextUpdate), and nextUpdate is enforced: after it,
    /// `auth` refuses the peers that CRL covers (bad-crl), an update server refuses to start
    /// with it and a running one refuses those devices, because an old CRL could be replayed
    /// to hide a later revocation. --refresh re-signs every CRL of OEM_DIR with the same
    /// entries, the next CRL number and a new nextUpdate (now + --days), and rewrites
    /// OEM_DIR/crl.pem: run it before nextUpdate (e.g. weekly for 30 days), then give the new
    /// crl.pem to servers (restart them) and devices. With no CRL yet there is nothing to
    /// refresh (an error, nothing written).
    ///
    /// Recorded in OEM_DIR/audit.log. Needs the passphrase or token PIN. Nothing is written
    /// unless every CRL was signed. A device's certificate is the first of its chain:
    /// `trustchain device info DEVICE_DIR --json` prints it (certificate_chain[0]), and the
    /// production report lists every device's.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["cert", "refresh"])))]
    Revoke {
        /// The OEM directory.
        oem_dir: PathBuf,
        /// The certificate to revoke (PEM or DER): a device certificate, or
        /// OEM_DIR/packages/<id>.issuing-ca.pem to revoke every device of that package.
        #[arg(long, value_name = "DEVICE_CERT")]
        cert: Option<PathBuf>,
        /// Revoke nothing: re-sign every existing CRL (same entries, CRL number + 1,
        /// thisUpdate now, nextUpdate now + --days) and rewrite the bundle.
        #[arg(long)]
        refresh: bool,
        /// Why (with --cert): key-compromise, ca-compromise, superseded, cessation-of-operation,
        /// unspecified.
        #[arg(long, default_value = "key-compromise", conflicts_with = "refresh")]
        reason: String,
        /// Days until the new CRL's nextUpdate (1 to 3650): refresh before then.
        #[arg(long, value_name = "N", default_value = "30")]
        days: u32,
        /// Also copy the CRL bundle to FILE (must not exist).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// In the field, at the OEM: make an update server's TLS identity, certified by the OEM root.
    ///
    /// Creates OUT (which must not exist) holding a new sealed keystore with the server's key
    /// (`keystore/`, sealed with the passphrase given as usual, or --identity-passphrase-file)
    /// and its certificate `server.pem` (server-auth usage, the --name DNS names and IP
    /// addresses). Devices check it against the OEM root they hold. Copy OUT to the update
    /// server; it needs nothing else from OEM_DIR but root.pem (and crl.pem).
    ///
    /// The OEM's secret (passphrase or token PIN) unlocks the root CA key. Without
    /// --identity-passphrase-file the server's keystore is sealed with that same secret: give
    /// the server its own passphrase, especially for a token-bound OEM directory, whose PIN
    /// should never reach the server.
    ServerCert {
        /// The OEM directory.
        oem_dir: PathBuf,
        /// A DNS name or IP address devices connect to. Repeat for several.
        #[arg(long, value_name = "HOST", required = true)]
        name: Vec<String>,
        /// Days of validity.
        #[arg(long, value_name = "N", default_value = "397")]
        days: u32,
        /// The identity directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seal the server's keystore with the passphrase in FILE (first line) instead of the
        /// OEM's secret; the server then starts with that passphrase.
        #[arg(long, value_name = "FILE")]
        identity_passphrase_file: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `trustchain update-server`.
#[derive(Debug, Args)]
pub struct UpdateServerArgs {
    /// The release directory (or a directory of release directories) to serve: the newest of
    /// each product is served; DIR/devices/<UID hex>/ holds releases for one device.
    #[arg(long, value_name = "DIR")]
    pub release: PathBuf,
    /// The OEM root certificate that devices must chain to.
    #[arg(long, value_name = "ROOT.pem")]
    pub root: PathBuf,
    /// Where to listen, e.g. 0.0.0.0:8443 (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// CRLs to honour (OEM_DIR/crl.pem from `trustchain oem revoke`), read at start: restart
    /// the server after a revocation. Every CRL must be current (before its nextUpdate) or
    /// the server does not start; once one expires, the running server refuses the devices
    /// it covers. Refresh them at the OEM (`oem revoke OEM_DIR --refresh`) before nextUpdate
    /// and restart the server with the new file.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// The server identity made by `trustchain oem server-cert`.
    #[arg(long, value_name = "DIR")]
    pub identity: PathBuf,
}

/// Where `oem init` and `guardian init` put the keys when not in the sealed keystore.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Generate the keys inside a PKCS#11 token (an HSM): the path of its PKCS#11 library,
    /// e.g. /usr/lib/softhsm/libsofthsm2.so for SoftHSM2. Needs --token.
    #[arg(long, value_name = "PATH", requires = "token")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token, as initialised with the HSM's tools (SoftHSM2:
    /// `softhsm2-util --init-token --free --label LABEL`). Needs --pkcs11-module.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub token: Option<String>,
    /// Read the token's user PIN from the first line of FILE (without it: --passphrase-file,
    /// TRUSTCHAIN_PASSPHRASE, or the prompt). Needs --pkcs11-module.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pin_file: Option<PathBuf>,
}

/// `trustchain produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The Guardian directory (the job's secrets and count are in it).
    pub guardian_dir: PathBuf,
    /// The job (see `trustchain guardian jobs`).
    #[arg(long, value_name = "ID")]
    pub job: i64,
    /// The directory of device directories (created if missing). Blank devices already there
    /// are used first, then new blank simulated devices DIR/dev-NNNNN are made, of the job's
    /// first device type and with UIDs in its range. --stage program takes the provisioned
    /// devices there that have no application yet.
    #[arg(long, value_name = "DIR")]
    pub devices: PathBuf,
    /// How many devices to produce in this run (not the job's count). Provisioning stops at
    /// what the job has left; the devices not covered are reported and the run exits non-zero.
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// Worker threads, each driving its own devices; the Guardian records their certificates
    /// in group transactions, so the count holds whatever the number of threads.
    #[arg(long, value_name = "T", default_value = "2")]
    pub threads: usize,
    /// provision (keys, certificate, product key, lock: consumes the count), program (the
    /// release through the SBM, boot check: consumes nothing), or all (both, device by device).
    /// Provision and program may run apart, e.g. on different lines.
    #[arg(long, value_name = "STAGE", default_value = "all", value_parser = ["provision", "program", "all"])]
    pub stage: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `trustchain wrap`.
#[derive(Debug, Args)]
pub struct WrapArgs {
    /// The OEM directory.
    pub oem_dir: PathBuf,
    /// The product (OEM_DIR/products/<N>: its key and template go into the package).
    #[arg(long, value_name = "N")]
    pub product: trustchain_oem::formats::ProductId,
    /// The target Guardian's identity certificate (its identity.pem, from `guardian init`).
    #[arg(long, value_name = "IDENTITY.pem")]
    pub guardian: PathBuf,
    /// The production count: how many device certificates the Guardian may issue from this
    /// package; the serials run from --serial-start to --serial-start + N - 1.
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// The mastered release to program (update.upk + update.enc, for the same product).
    #[arg(long, value_name = "RELEASE_DIR")]
    pub release: PathBuf,
    /// The package file to write (must not exist).
    #[arg(long, value_name = "PACKAGE")]
    pub out: PathBuf,
    /// First serial number ({serial} in the template). Give each package of a product its own
    /// range, e.g. the next package starts after the last one's end.
    #[arg(long, value_name = "N", default_value = "1")]
    pub serial_start: u64,
    /// Only devices whose UID is in this inclusive range, e.g. 0000..00ff (hex, equal lengths).
    #[arg(long, value_name = "A..B")]
    pub uid_range: Option<String>,
    /// Only devices of this type (`device new --type`). Repeat for several; default: any type.
    #[arg(long, value_name = "N")]
    pub device_type: Vec<u32>,
    /// When the package expires (RFC 3339, e.g. 2026-12-31T23:59:59Z); default 30 days from
    /// now. The Guardian refuses to import it, or to provision for its job, after that.
    #[arg(long, value_name = "RFC3339")]
    pub expires: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `trustchain guardian ...`.
#[derive(Debug, Subcommand)]
pub enum GuardianCommand {
    /// Secure production, at the programming centre: create a Guardian in GUARDIAN_DIR (which
    /// must not exist): its identity keys (never exported; sealed in its keystore) and
    /// GUARDIAN_DIR/identity.pem, the certificate OEMs wrap packages for.
    ///
    /// Also writes guardian.toml, guardian.db (jobs, counts, audit log) and trusted-roots/. The
    /// passphrase is the Guardian's own, never the OEM's (asked twice at the prompt). Prints the
    /// Guardian ID (SHA-256 of the first certificate in identity.pem): send identity.pem to each
    /// OEM and confirm the ID with them over another channel.
    ///
    /// With --pkcs11-module and --token, the identity keys (signing, and the key-agreement key
    /// packages are encrypted to) are generated inside the PKCS#11 token, sensitive and never
    /// extractable; each imported job's issuing key is put into the token too, so device
    /// certificates are signed there. Only a job's product key, which goes to every device
    /// wrapped to the device's own key, stays a sealed file under a key the token holds.
    /// guardian.toml records the module and token label (never the PIN); import, produce and
    /// report find the token by themselves and ask for its user PIN where they ask for the
    /// passphrase (--passphrase-file FILE, TRUSTCHAIN_PASSPHRASE, or the prompt).
    Init {
        /// The directory to create.
        guardian_dir: PathBuf,
        /// The Guardian's name, put in its certificates' subjects.
        #[arg(long)]
        name: String,
        /// Keep the keys in a PKCS#11 token instead of the sealed keystore.
        #[command(flatten)]
        token: TokenArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, at the programming centre: trust an OEM root: packages signed under
    /// it can be imported.
    ///
    /// Check the root's SHA-256 with the OEM over another channel (phone, signed letter) before
    /// trusting it: `oem init` printed it at the OEM, and `trustchain inspect ROOT.pem` shows it
    /// here (sha256_fingerprint); this command prints it again. Copies the certificate into
    /// GUARDIAN_DIR/trusted-roots/ and records it in the audit log; needs no secret.
    Trust {
        /// The Guardian directory.
        guardian_dir: PathBuf,
        /// The OEM root certificate (the OEM's root.pem).
        #[arg(value_name = "ROOT.pem")]
        root: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, at the programming centre: import a package: it is opened only inside
    /// this Guardian, checked (OEM signature and chain to a trusted root, target Guardian,
    /// expiry, replay), and becomes a job.
    ///
    /// Needs the Guardian's passphrase (or token PIN). The job (count, serials, template,
    /// release, certificates) goes into GUARDIAN_DIR/guardian.db; the issuing CA key and the
    /// product key go into the Guardian's keystore (the issuing key into its token, if any).
    /// Prints the job ID for `produce` and `report`. A package is imported once.
    Import {
        /// The Guardian directory.
        guardian_dir: PathBuf,
        /// The package file (from the OEM's `trustchain wrap`).
        package: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, at the programming centre: verify the Guardian's audit log.
    ///
    /// Checks the hash chain of every action recorded in guardian.db and the Guardian's
    /// signatures of its checkpoints. Needs no secret; exits non-zero if the log was altered.
    Log {
        /// The Guardian directory.
        guardian_dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Secure production, at the programming centre: list the jobs with their count, issued,
    /// failed and remaining devices.
    ///
    /// Reads guardian.db; needs no secret. A job with 0 remaining is finished: the OEM must wrap
    /// a new package for more devices.
    Jobs {
        /// The Guardian directory.
        guardian_dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `trustchain device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// The device: create a blank simulated MCU in DEVICE_DIR (which must not exist).
    ///
    /// flash.bin is its raw flash, device.toml and protected.bin the rest: no keys, no application;
    /// the SBM waits in recovery. Prints the application slot's address and size: master images for
    /// it. For lab devices (then `device provision`); `produce` makes its own blank devices.
    New {
        /// The directory to create.
        device_dir: PathBuf,
        /// The device UID (hex, 1 to 32 bytes); random by default.
        #[arg(long, value_name = "HEX")]
        uid: Option<String>,
        /// The device type (a package may allow only some types: `wrap --device-type`).
        #[arg(long = "type", value_name = "N", default_value = "1")]
        device_type: u32,
        /// Flash size in bytes (a multiple of the page size).
        #[arg(long, value_name = "BYTES", value_parser = crate::cli::parse_u32, default_value = "262144")]
        flash_size: u32,
        /// Use large flash pages (16 KiB, 16-byte writes) instead of small ones (1 KiB, 8-byte).
        #[arg(long)]
        large_pages: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The device: show UID, type, lifecycle, the installed version and digest, and the
    /// certificate chain.
    ///
    /// As the SBM reports them; changes nothing; needs no secret. --json also prints the chain and
    /// the OEM root as PEM (the device certificate is certificate_chain[0], e.g. for `oem revoke`).
    Info {
        /// The device directory.
        device_dir: PathBuf,
        /// Print JSON (the certificate chain as PEM strings).
        #[arg(long)]
        json: bool,
    },
    /// Secure development, at the OEM's lab: provision a development device: the device
    /// generates its keys, the device CA certifies the identity key from the product's
    /// template, the root and chain and the OEM keys go into write-protected storage, and the
    /// device is locked.
    ///
    /// Needs the OEM directory and its passphrase (or token PIN): the device CA signs here and
    /// the product key goes to the device wrapped to the device's own key. A locked device
    /// cannot be provisioned again. Production devices are provisioned by `produce` at the
    /// programming centre instead, without the OEM's keys.
    Provision {
        /// The device directory (a blank device, from `device new`).
        device_dir: PathBuf,
        /// The OEM directory.
        #[arg(long, value_name = "OEM_DIR")]
        oem: PathBuf,
        /// The product (OEM_DIR/products/<N>: its template and product key).
        #[arg(long, value_name = "N")]
        product: trustchain_oem::formats::ProductId,
        /// The serial number put in the certificate ({serial} in the template). Keep lab serials
        /// apart from the ranges given to packages (`wrap --serial-start`).
        #[arg(long, value_name = "N", default_value = "1")]
        serial: u64,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The device, in the lab or on a programming line: program a release through the SBM, as a
    /// programmer does.
    ///
    /// Sends update.upk and update.enc over the SBM's connection protocol; the SBM verifies them,
    /// decrypts the image into flash, and it boots. The device must be provisioned (it holds the
    /// mastering key and product key that check and open the release). Needs no secret. On a
    /// refusal the SBM's reason is printed, the command exits non-zero and the device is left
    /// unchanged.
    Install {
        /// The device directory.
        device_dir: PathBuf,
        /// The release directory.
        release_dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The device: reset it; exit 0 if the application verifies, non-zero with the reason
    /// otherwise.
    ///
    /// The SBM first finishes a pending install or update (one staged by `device fetch`, or one
    /// interrupted by a power cut), then checks the application against its signature table and
    /// prints the version and digest. Needs no secret.
    Boot {
        /// The device directory.
        device_dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The device, in the field: the application's update path, from a release directory.
    ///
    /// Stages the release, calls the SBM's update service, resets. Exits non-zero with the
    /// SBM's reason when it refuses; the old version keeps running. `device fetch` does the same
    /// from an update server. Needs no secret.
    Update {
        /// The device directory.
        device_dir: PathBuf,
        /// The release directory.
        release_dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// In the field: the application downloads the newest release from an update server into
    /// the staging area; the next `device boot` has the SBM verify and apply it.
    ///
    /// Mutual TLS 1.3: the device presents its certificate chain (the SBM signs the handshake;
    /// the key never leaves it) and trusts only its OEM root for the server. The download is
    /// bounded by the size the UPK signs; a rollback, a truncated or endless download and an
    /// image that is not the one the UPK signs are refused before the SBM is asked, and the SBM
    /// checks signature, OEM, product and UID before it writes. On any refusal the device is
    /// unchanged; the running application and the signature table are untouched until the boot.
    Fetch {
        /// The device directory.
        device_dir: PathBuf,
        /// The update server, https://HOST[:PORT].
        #[arg(long, value_name = "URL")]
        server: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `trustchain master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// The OEM directory.
    pub oem_dir: PathBuf,
    /// The product the image is for (encrypted to its product key).
    #[arg(long, value_name = "N")]
    pub product: trustchain_oem::formats::ProductId,
    /// The firmware version, MAJOR.MINOR.PATCH (signed in the UPK; sets the default counter).
    #[arg(long, value_name = "X.Y.Z")]
    pub version: trustchain_oem::formats::Version,
    /// The firmware image: raw binary, Intel HEX or ELF (detected; see --format).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The output directory to create (must not exist; its parent must); it gets exactly
    /// update.upk and update.enc.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Anti-rollback counter; default: MAJOR<<32 | MINOR<<16 | PATCH. Devices refuse a release
    /// whose counter is below the one they hold.
    #[arg(long, value_name = "N")]
    pub security_counter: Option<u64>,
    /// Master even though the counter is below the last one mastered for this product (a device
    /// that already runs a higher counter will still refuse it).
    #[arg(long)]
    pub force: bool,
    /// Also wrap the content key for this device (a certificate with keyAgreement usage, or a
    /// P-256 public key; PEM or DER). Repeat for several devices.
    #[arg(long, value_name = "CERT_OR_PUBKEY")]
    pub device: Vec<PathBuf>,
    /// Only devices with this UID (hex) may install the image. Repeat for several; default: every
    /// device of the product.
    #[arg(long, value_name = "HEX")]
    pub allow_uid: Vec<String>,
    /// Force the input format instead of detecting it: raw, ihex or elf.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<trustchain_oem::image::ImageFormat>,
    /// Load address of a raw image (Intel HEX and ELF carry their own), decimal or 0x-hex. The
    /// device refuses an image not linked for its application slot (0x08000000 on the
    /// simulated MCU).
    #[arg(long, value_name = "ADDR", value_parser = parse_u64, default_value = "0")]
    pub load_address: u64,
    /// Largest gap between segments filled with 0xFF (Intel HEX, ELF), bytes.
    #[arg(long, value_name = "BYTES", value_parser = parse_u64, default_value = "65536")]
    pub max_gap: u64,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Decimal or 0x-hex, 32 bits.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    parse_u64(s).and_then(|v| u32::try_from(v).map_err(|_| format!("'{s}' is above 4294967295")))
}

/// Decimal or 0x-hex.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (decimal or 0x-hex)"))
}
