//! A whole simulated device, persisted in a device directory.
//!
//! ```text
//! DEVICE_DIR/
//!   device.toml    identity, geometry, SBM version, life counters
//!   flash.bin      the raw flash, exactly `capacity` bytes: tamper freely
//!   protected.bin  protected storage (layout in `crate::protected`)
//! ```
//!
//! `device.toml`:
//!
//! ```toml
//! format = 1
//! uid = "0102a0ff"            # hex, 1..=32 bytes; equals the Uid field
//! device_type = 7             # equals the DeviceType field (big-endian u32)
//! page_size = 1024
//! write_size = 8
//! capacity = 262144
//! sbm_version = "0.1.0"       # at most 64 characters, no control characters
//!
//! [counters]
//! ops = 12                    # operations numbered by the power supply
//! flash_erases = 4
//! flash_programs = 7
//! flash_bytes_programmed = 448
//! protected_writes = 1        # write_once and lock
//! ```
//!
//! Opening checks every file against the others: a `flash.bin` of the wrong
//! size or a malformed `protected.bin` is an error naming the file. Bytes
//! changed inside `flash.bin` are accepted: that is how tests tamper.
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trustchain_sbm::hal::Field;

use crate::debug::DebugPort;
use crate::flash::{FlashCounters, Geometry, GeometryError, SimFlash};
use crate::power::PowerSupply;
use crate::protected::{self, Contents, ProtectedFileError, SimProtected};
use crate::rng::SimRng;

/// The name of the identity and geometry file.
pub const DEVICE_TOML: &str = "device.toml";
/// The name of the raw flash file.
pub const FLASH_BIN: &str = "flash.bin";
/// The name of the protected-storage file.
pub const PROTECTED_BIN: &str = "protected.bin";
/// The `format` of `device.toml` this simulator reads and writes.
pub const FORMAT: u32 = 1;

const MAX_TOML_LEN: u64 = 64 * 1024;
const MAX_SBM_VERSION_LEN: usize = 64;

/// Why a device directory could not be created, opened or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `create` was given a directory that exists.
    #[error("{}: already exists", path.display())]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// `open` was given a directory that does not exist.
    #[error("{}: no such device directory", path.display())]
    NotFound {
        /// The directory.
        path: PathBuf,
    },
    /// The directory has no `device.toml`.
    #[error("{}: not a device directory (no {DEVICE_TOML})", path.display())]
    NotADeviceDir {
        /// The directory.
        path: PathBuf,
    },
    /// A file is larger than any valid one.
    #[error("{}: larger than {max} bytes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// `device.toml` is not valid TOML or lacks a key.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// `device.toml` has a format this simulator does not read.
    #[error("{}: format {found}, this simulator reads format {FORMAT}", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The geometry in `device.toml` is invalid.
    #[error("{}: {source}", path.display())]
    Geometry {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: GeometryError,
    },
    /// A value (UID, SBM version) is invalid.
    #[error("{}: {key}: {problem}", path.display())]
    BadValue {
        /// The file, or the directory for `create`.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `flash.bin` does not have the size the geometry says.
    #[error("{}: {found} bytes, but the geometry's capacity is {expected}", path.display())]
    FlashSize {
        /// The file.
        path: PathBuf,
        /// The capacity.
        expected: u64,
        /// The file's size.
        found: u64,
    },
    /// `protected.bin` is malformed.
    #[error("{}: {source}", path.display())]
    ProtectedFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ProtectedFileError,
    },
    /// `device.toml` and `protected.bin` disagree.
    #[error("{}: {what}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        what: String,
    },
    /// `save` was called on a device kept in memory.
    #[error("the device is kept in memory and has no directory to save to")]
    InMemory,
}

impl DeviceError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            DeviceError::Io { .. } => "check that the path exists and is readable and writable",
            DeviceError::AlreadyExists { .. } => {
                "choose a new device directory, or open the existing one with SimDevice::open"
            }
            DeviceError::NotFound { .. } => "create the device first (SimDevice::create)",
            DeviceError::NotADeviceDir { .. } => "pass a directory made by SimDevice::create",
            DeviceError::FileTooLarge { .. } => {
                "the file was replaced by something else; restore it or create a new device"
            }
            DeviceError::Toml { .. } => "fix device.toml; its keys are listed in the device module's documentation",
            DeviceError::UnsupportedFormat { .. } => "create the device again with this version of the simulator",
            DeviceError::Geometry { .. } => {
                "page_size and write_size must be powers of two, write_size at most page_size, capacity a multiple of page_size"
            }
            DeviceError::BadValue { .. } => {
                "uid is 1 to 32 bytes in hex; sbm_version at most 64 characters without control characters"
            }
            DeviceError::FlashSize { .. } => {
                "flash.bin must stay exactly `capacity` bytes: change bytes in it to tamper, never cut or extend it"
            }
            DeviceError::ProtectedFile { .. } => {
                "protected.bin is damaged; its byte layout is in the protected module's documentation"
            }
            DeviceError::Inconsistent { .. } => {
                "device.toml and protected.bin were edited apart; restore both or create a new device"
            }
            DeviceError::InMemory => {
                "make the device with SimDevice::create to keep it in a directory"
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
    move |source| DeviceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceToml {
    format: u32,
    uid: String,
    device_type: u32,
    page_size: u32,
    write_size: u32,
    capacity: u32,
    sbm_version: String,
    counters: CountersToml,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountersToml {
    ops: u64,
    flash_erases: u64,
    flash_programs: u64,
    flash_bytes_programmed: u64,
    protected_writes: u64,
}

/// The device's hardware, borrowed all at once to run the SBM on it.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The flash.
    pub flash: &'a mut SimFlash,
    /// The protected storage.
    pub protected: &'a mut SimProtected,
    /// The random source.
    pub rng: &'a mut SimRng,
}

/// A simulated MCU: identity, flash, protected storage, random source and
/// power supply, saved in a device directory (or kept in memory only).
#[derive(Debug)]
pub struct SimDevice {
    /// `None` for a device kept in memory ([`SimDevice::in_memory`]).
    dir: Option<PathBuf>,
    uid: Vec<u8>,
    device_type: u32,
    sbm_version: String,
    power: PowerSupply,
    flash: SimFlash,
    protected: SimProtected,
    rng: SimRng,
}

fn check_uid(uid: &[u8], path: &Path) -> Result<(), DeviceError> {
    if uid.is_empty() || uid.len() > Field::Uid.capacity() {
        return Err(DeviceError::BadValue {
            path: path.to_path_buf(),
            key: "uid",
            problem: format!(
                "{} bytes, expected 1 to {}",
                uid.len(),
                Field::Uid.capacity()
            ),
        });
    }
    Ok(())
}

fn check_sbm_version(v: &str, path: &Path) -> Result<(), DeviceError> {
    if v.len() > MAX_SBM_VERSION_LEN || v.chars().any(char::is_control) {
        return Err(DeviceError::BadValue {
            path: path.to_path_buf(),
            key: "sbm_version",
            problem: format!(
                "{v:?} is longer than {MAX_SBM_VERSION_LEN} bytes or has control characters"
            ),
        });
    }
    Ok(())
}

/// Reads at most `max` bytes; a longer file is an error.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DeviceError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(max.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(io(path))?;
    if bytes.len() as u64 > max {
        return Err(DeviceError::FileTooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a synced temporary file in the same
/// directory, renamed into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tc-tmp-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| DeviceError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

impl SimDevice {
    /// Makes a new device in `dir`, which must not exist: flash erased, the
    /// protected fields `Uid` and `DeviceType` written as a factory would
    /// (these writes are before the device's life: no operation is
    /// counted), unlocked, and saved. The directory is built under a
    /// temporary name and renamed, so a failure leaves nothing behind.
    pub fn create(
        dir: impl AsRef<Path>,
        uid: &[u8],
        device_type: u32,
        geometry: Geometry,
    ) -> Result<Self, DeviceError> {
        let dir = dir.as_ref().to_path_buf();
        check_uid(uid, &dir)?;
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(DeviceError::AlreadyExists { path: dir });
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io(&parent))?;

        let mut device = Self::blank(uid, device_type, geometry);
        let staging = tempfile::Builder::new()
            .prefix(".tc-device-")
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        device.dir = Some(staging.path().to_path_buf());
        device.save()?;
        let staged = staging.keep();
        if let Err(source) = fs::rename(&staged, &dir) {
            let _ = fs::remove_dir_all(&staged);
            return Err(DeviceError::Io { path: dir, source });
        }
        device.dir = Some(dir);
        Ok(device)
    }

    /// Makes a new device as [`SimDevice::create`] does, but kept in memory
    /// only: the same hardware and rules, no directory, and [`SimDevice::save`]
    /// refuses. For runs that need many devices and none afterwards
    /// (benchmarks).
    pub fn in_memory(
        uid: &[u8],
        device_type: u32,
        geometry: Geometry,
    ) -> Result<Self, DeviceError> {
        check_uid(uid, Path::new("(in memory)"))?;
        Ok(Self::blank(uid, device_type, geometry))
    }

    /// A new device: flash erased, the factory fields written, no directory.
    fn blank(uid: &[u8], device_type: u32, geometry: Geometry) -> Self {
        let power = PowerSupply::new();
        let mut protected = SimProtected::new(power.clone());
        protected.factory_write(Field::Uid, uid);
        protected.factory_write(Field::DeviceType, &device_type.to_be_bytes());
        SimDevice {
            dir: None,
            uid: uid.to_vec(),
            device_type,
            sbm_version: env!("CARGO_PKG_VERSION").to_string(),
            flash: SimFlash::new(geometry, power.clone()),
            protected,
            power,
            rng: SimRng::os(),
        }
    }

    /// Opens the device in `dir`, checking every file: the geometry, the
    /// identity, that `flash.bin` is exactly `capacity` bytes, that
    /// `protected.bin` parses and holds the same UID and device type as
    /// `device.toml`. The power is on and no cut is planned; the random
    /// source is the OS.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DeviceError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(DeviceError::NotFound { path: dir });
        }
        let toml_path = dir.join(DEVICE_TOML);
        if !toml_path.exists() {
            return Err(DeviceError::NotADeviceDir { path: dir });
        }
        let text = read_bounded(&toml_path, MAX_TOML_LEN)?;
        let text = String::from_utf8(text).map_err(|_| DeviceError::Toml {
            path: toml_path.clone(),
            message: "not UTF-8".to_string(),
        })?;
        let meta: DeviceToml = toml::from_str(&text).map_err(|e| DeviceError::Toml {
            path: toml_path.clone(),
            message: e.message().to_string(),
        })?;
        if meta.format != FORMAT {
            return Err(DeviceError::UnsupportedFormat {
                path: toml_path,
                found: meta.format,
            });
        }
        let geometry =
            Geometry::new(meta.page_size, meta.write_size, meta.capacity).map_err(|source| {
                DeviceError::Geometry {
                    path: toml_path.clone(),
                    source,
                }
            })?;
        let uid = hex::decode(&meta.uid).map_err(|e| DeviceError::BadValue {
            path: toml_path.clone(),
            key: "uid",
            problem: format!("not hex: {e}"),
        })?;
        check_uid(&uid, &toml_path)?;
        check_sbm_version(&meta.sbm_version, &toml_path)?;

        let prot_path = dir.join(PROTECTED_BIN);
        let contents = Contents::decode(&read_bounded(&prot_path, protected::MAX_FILE_LEN as u64)?)
            .map_err(|source| DeviceError::ProtectedFile {
                path: prot_path.clone(),
                source,
            })?;
        let device_type_bytes = meta.device_type.to_be_bytes();
        for (field, expected, key) in [
            (Field::Uid, &uid[..], "uid"),
            (Field::DeviceType, &device_type_bytes[..], "device_type"),
        ] {
            let found = contents.fields.get(&field);
            if found.map(Vec::as_slice) != Some(expected) {
                return Err(DeviceError::Inconsistent {
                    path: prot_path,
                    what: match found {
                        None => format!("no {field:?} field, but {DEVICE_TOML} has a {key}"),
                        Some(v) => format!(
                            "{field:?} field is {}, but {DEVICE_TOML} says {}",
                            hex::encode(v),
                            hex::encode(expected)
                        ),
                    },
                });
            }
        }

        let flash_path = dir.join(FLASH_BIN);
        let expected = u64::from(geometry.capacity());
        let found = fs::metadata(&flash_path).map_err(io(&flash_path))?.len();
        let flash_size = |found| DeviceError::FlashSize {
            path: flash_path.clone(),
            expected,
            found,
        };
        if found != expected {
            return Err(flash_size(found));
        }
        let data = match read_bounded(&flash_path, expected) {
            Ok(data) if data.len() as u64 == expected => data,
            Ok(data) => return Err(flash_size(data.len() as u64)),
            Err(DeviceError::FileTooLarge { .. }) => return Err(flash_size(expected + 1)),
            Err(e) => return Err(e),
        };

        let c = &meta.counters;
        let power = PowerSupply::with_ops(c.ops);
        let counters = FlashCounters {
            erases: c.flash_erases,
            programs: c.flash_programs,
            bytes_programmed: c.flash_bytes_programmed,
        };
        Ok(SimDevice {
            dir: Some(dir),
            uid,
            device_type: meta.device_type,
            sbm_version: meta.sbm_version,
            flash: SimFlash::restored(geometry, power.clone(), data, counters),
            protected: SimProtected::restored(contents, power.clone(), c.protected_writes),
            power,
            rng: SimRng::os(),
        })
    }

    /// Saves every file, each atomically (temporary file and rename). The
    /// planned cut, the power state and the random source are not saved.
    /// A device kept in memory has nowhere to go: [`DeviceError::InMemory`].
    pub fn save(&self) -> Result<(), DeviceError> {
        let dir = self.dir.as_deref().ok_or(DeviceError::InMemory)?;
        let g = self.flash.geometry();
        let c = self.flash.counters();
        let meta = DeviceToml {
            format: FORMAT,
            uid: hex::encode(&self.uid),
            device_type: self.device_type,
            page_size: g.page_size(),
            write_size: g.write_size(),
            capacity: g.capacity(),
            sbm_version: self.sbm_version.clone(),
            counters: CountersToml {
                ops: self.power.ops(),
                flash_erases: c.erases,
                flash_programs: c.programs,
                flash_bytes_programmed: c.bytes_programmed,
                protected_writes: self.protected.writes(),
            },
        };
        let toml_path = dir.join(DEVICE_TOML);
        let text = toml::to_string(&meta).map_err(|e| DeviceError::Toml {
            path: toml_path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&dir.join(FLASH_BIN), self.flash.raw())?;
        write_atomic(
            &dir.join(PROTECTED_BIN),
            &self.protected.contents().encode(),
        )?;
        write_atomic(&toml_path, text.as_bytes())
    }

    /// Reboots: the power comes back after a cut. Flash and protected
    /// storage keep what they hold (torn bytes included); a cut planned but
    /// not yet reached stays planned. Nothing is saved.
    pub fn reboot(&mut self) {
        self.power.restore();
    }

    /// The device directory (`None` for a device kept in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The unique ID.
    pub fn uid(&self) -> &[u8] {
        &self.uid
    }

    /// The device type.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The flash geometry.
    pub fn geometry(&self) -> Geometry {
        self.flash.geometry()
    }

    /// The version of the SBM the device runs (at creation, this
    /// workspace's version).
    pub fn sbm_version(&self) -> &str {
        &self.sbm_version
    }

    /// Records the SBM version the device runs (saved by [`SimDevice::save`]).
    pub fn set_sbm_version(&mut self, version: &str) -> Result<(), DeviceError> {
        check_sbm_version(version, self.dir().unwrap_or(Path::new("(in memory)")))?;
        self.sbm_version = version.to_string();
        Ok(())
    }

    /// The flash.
    pub fn flash(&self) -> &SimFlash {
        &self.flash
    }

    /// The flash, to run on or tamper with.
    pub fn flash_mut(&mut self) -> &mut SimFlash {
        &mut self.flash
    }

    /// The protected storage.
    pub fn protected(&self) -> &SimProtected {
        &self.protected
    }

    /// The protected storage, to run on.
    pub fn protected_mut(&mut self) -> &mut SimProtected {
        &mut self.protected
    }

    /// The random source.
    pub fn rng_mut(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Replaces the random source (e.g. [`SimRng::seeded`] for a test).
    pub fn set_rng(&mut self, rng: SimRng) {
        self.rng = rng;
    }

    /// The power supply shared by flash and protected storage.
    pub fn power(&self) -> &PowerSupply {
        &self.power
    }

    /// A probe on the debug port.
    pub fn debug_port(&mut self) -> DebugPort<'_> {
        DebugPort::new(&mut self.flash, &self.protected)
    }

    /// Flash, protected storage and random source at once.
    pub fn parts(&mut self) -> Parts<'_> {
        Parts {
            flash: &mut self.flash,
            protected: &mut self.protected,
            rng: &mut self.rng,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::DebugError;
    use crate::power::CutMode;
    use trustchain_sbm::hal::{Flash, FlashError, Protected, ProtectedError, Rng};

    fn new_device(tmp: &tempfile::TempDir, geometry: Geometry) -> SimDevice {
        SimDevice::create(tmp.path().join("dev"), &[0xD0, 0x01], 0x0102_0304, geometry).unwrap()
    }

    #[test]
    fn in_memory_has_the_factory_fields_and_refuses_to_save() {
        let mut d = SimDevice::in_memory(&[0xD0, 0x01], 7, Geometry::SMALL_PAGES).unwrap();
        assert_eq!(d.dir(), None);
        let mut buf = [0u8; 32];
        assert_eq!(d.protected_mut().read(Field::Uid, &mut buf), Ok(2));
        assert_eq!(&buf[..2], &[0xD0, 0x01]);
        assert_eq!(d.protected_mut().read(Field::DeviceType, &mut buf), Ok(4));
        assert_eq!(&buf[..4], &[0, 0, 0, 7]);
        assert!(d.flash().raw().iter().all(|&b| b == 0xFF));
        assert!(matches!(d.save(), Err(DeviceError::InMemory)));
        assert!(SimDevice::in_memory(&[], 7, Geometry::SMALL_PAGES).is_err());
    }

    #[test]
    fn create_writes_the_factory_fields_and_an_erased_flash() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = new_device(&tmp, Geometry::SMALL_PAGES);
        let dir = tmp.path().join("dev");
        assert_eq!(d.dir(), Some(dir.as_path()));
        let mut buf = [0u8; 32];
        assert_eq!(d.protected_mut().read(Field::Uid, &mut buf), Ok(2));
        assert_eq!(&buf[..2], &[0xD0, 0x01]);
        assert_eq!(d.protected_mut().read(Field::DeviceType, &mut buf), Ok(4));
        assert_eq!(&buf[..4], &[1, 2, 3, 4]);
        assert!(!d.protected_mut().is_locked());
        assert_eq!(d.power().ops(), 0, "factory writes are not operations");
        let flash = fs::read(dir.join(FLASH_BIN)).unwrap();
        assert_eq!(flash.len(), 256 * 1024);
        assert!(flash.iter().all(|&b| b == 0xFF));
        let toml = fs::read_to_string(dir.join(DEVICE_TOML)).unwrap();
        assert!(toml.contains("format = 1\n"), "{toml}");
        assert!(toml.contains("uid = \"d001\"\n"), "{toml}");
        assert!(toml.contains("device_type = 16909060\n"), "{toml}");
        assert!(toml.contains("capacity = 262144\n"), "{toml}");
        // Nothing but the three files; no temporary left next to the device.
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [DEVICE_TOML, FLASH_BIN, PROTECTED_BIN]);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_refuses_an_existing_dir_and_a_bad_uid() {
        let tmp = tempfile::tempdir().unwrap();
        let err = SimDevice::create(tmp.path(), b"x", 1, Geometry::SMALL_PAGES).unwrap_err();
        assert!(
            matches!(err, DeviceError::AlreadyExists { ref path } if path == tmp.path()),
            "{err}"
        );
        for uid in [&[][..], &[0u8; 33][..]] {
            let err =
                SimDevice::create(tmp.path().join("d"), uid, 1, Geometry::SMALL_PAGES).unwrap_err();
            assert!(
                matches!(err, DeviceError::BadValue { key: "uid", .. }),
                "{err}"
            );
        }
        assert!(!tmp.path().join("d").exists());
    }

    #[test]
    fn persistence_round_trip() {
        for geometry in [Geometry::SMALL_PAGES, Geometry::LARGE_PAGES] {
            let tmp = tempfile::tempdir().unwrap();
            let mut d = new_device(&tmp, geometry);
            let page = geometry.page_size();
            {
                let p = d.parts();
                p.flash.erase_page(page).unwrap();
                p.flash.program(page, &[0x5A; 64]).unwrap();
                p.protected.write_once(Field::OemRoot, b"oem root").unwrap();
                p.protected
                    .write_once(Field::IdentityKey, &[0x11; 32])
                    .unwrap();
                p.protected.lock().unwrap();
            }
            // A torn program, then a reboot: the torn bytes are saved too.
            d.power().cut_after(1, CutMode::Tear { seed: 1 });
            assert_eq!(
                d.flash_mut().program(2 * page, &[0u8; 64]),
                Err(FlashError::PowerLoss)
            );
            d.reboot();
            d.set_sbm_version("1.2.3-test").unwrap();
            d.save().unwrap();

            let mut o = SimDevice::open(d.dir().unwrap()).unwrap();
            assert_eq!(o.uid(), d.uid());
            assert_eq!(o.device_type(), 0x0102_0304);
            assert_eq!(o.geometry(), geometry);
            assert_eq!(o.sbm_version(), "1.2.3-test");
            assert_eq!(o.flash().raw(), d.flash().raw());
            assert_eq!(o.flash().counters(), d.flash().counters());
            let c = o.flash().counters();
            assert_eq!((c.erases, c.programs), (1, 2), "the torn program counts");
            assert!(
                (64..128).contains(&c.bytes_programmed),
                "64 + the torn prefix"
            );
            assert_eq!(o.power().ops(), 6);
            assert_eq!(o.protected().writes(), 3);
            assert_eq!(o.protected().contents(), d.protected().contents());
            assert!(o.protected_mut().is_locked());
            let mut key = [0u8; 32];
            assert_eq!(o.protected_mut().read(Field::IdentityKey, &mut key), Ok(32));
            assert_eq!(key, [0x11; 32]);
            // Counting continues where the saved device stopped.
            o.flash_mut().erase_page(0).unwrap();
            assert_eq!(o.power().ops(), 7);
            assert_eq!(
                o.protected_mut().write_once(Field::OemKeys, b"k"),
                Err(ProtectedError::Locked)
            );
        }
    }

    #[test]
    fn flipped_bits_in_flash_bin_are_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let d = new_device(&tmp, Geometry::SMALL_PAGES);
        let path = d.dir().unwrap().join(FLASH_BIN);
        let mut raw = fs::read(&path).unwrap();
        raw[4096] ^= 0x80;
        fs::write(&path, &raw).unwrap();
        let mut o = SimDevice::open(d.dir().unwrap()).unwrap();
        let mut b = [0u8; 1];
        o.flash_mut().read(4096, &mut b).unwrap();
        assert_eq!(b, [0x7F]);
    }

    #[test]
    fn open_refuses_a_wrong_size_flash_bin() {
        let tmp = tempfile::tempdir().unwrap();
        let d = new_device(&tmp, Geometry::SMALL_PAGES);
        let path = d.dir().unwrap().join(FLASH_BIN);
        for len in [256 * 1024 - 1, 256 * 1024 + 1, 0] {
            fs::write(&path, vec![0xFF; len]).unwrap();
            let err = SimDevice::open(d.dir().unwrap()).unwrap_err();
            match &err {
                DeviceError::FlashSize {
                    path: p,
                    expected,
                    found,
                } => {
                    assert_eq!((p, *expected, *found), (&path, 256 * 1024, len as u64));
                }
                other => panic!("{other}"),
            }
            assert!(err.to_string().contains("flash.bin"), "{err}");
            assert!(err.hint().contains("capacity"));
        }
        fs::remove_file(&path).unwrap();
        assert!(
            matches!(SimDevice::open(d.dir().unwrap()), Err(DeviceError::Io { path: p, .. }) if p == path)
        );
    }

    #[test]
    fn open_refuses_a_corrupted_protected_bin() {
        let tmp = tempfile::tempdir().unwrap();
        let d = new_device(&tmp, Geometry::SMALL_PAGES);
        let path = d.dir().unwrap().join(PROTECTED_BIN);
        let good = fs::read(&path).unwrap();
        let mut bad_lock = good.clone();
        bad_lock[5] = 7;
        let cases: [(Vec<u8>, ProtectedFileError); 3] = [
            (bad_lock, ProtectedFileError::BadLockByte(7)),
            (
                good[..good.len() - 1].to_vec(),
                ProtectedFileError::Truncated {
                    offset: good.len() - 1,
                    needed: 1,
                },
            ),
            (
                [&good[..], &[0][..]].concat(),
                ProtectedFileError::TrailingBytes {
                    count: 1,
                    offset: good.len(),
                },
            ),
        ];
        for (bytes, expected) in cases {
            fs::write(&path, &bytes).unwrap();
            let err = SimDevice::open(d.dir().unwrap()).unwrap_err();
            assert!(err.to_string().contains("protected.bin"), "{err}");
            match err {
                DeviceError::ProtectedFile { path: p, source } => {
                    assert_eq!(p, path);
                    assert_eq!(source, expected);
                }
                other => panic!("{other}"),
            }
        }
        fs::write(&path, vec![0; protected::MAX_FILE_LEN + 1]).unwrap();
        let err = SimDevice::open(d.dir().unwrap()).unwrap_err();
        assert!(
            matches!(err, DeviceError::FileTooLarge { ref path, .. } if path.ends_with(PROTECTED_BIN))
        );
    }

    #[test]
    fn open_refuses_protected_fields_that_disagree_with_device_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let d = new_device(&tmp, Geometry::SMALL_PAGES);
        let mut other = d.protected().contents().clone();
        other.fields.insert(Field::Uid, vec![0xD0, 0x02]);
        fs::write(d.dir().unwrap().join(PROTECTED_BIN), other.encode()).unwrap();
        let err = SimDevice::open(d.dir().unwrap()).unwrap_err();
        assert!(matches!(err, DeviceError::Inconsistent { .. }), "{err}");
        assert!(
            err.to_string().contains("d002") && err.to_string().contains("d001"),
            "{err}"
        );
        other.fields.insert(Field::Uid, vec![0xD0, 0x01]);
        other.fields.remove(&Field::DeviceType);
        fs::write(d.dir().unwrap().join(PROTECTED_BIN), other.encode()).unwrap();
        let err = SimDevice::open(d.dir().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no DeviceType field"), "{err}");
    }

    #[test]
    fn open_refuses_a_bad_device_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let d = new_device(&tmp, Geometry::SMALL_PAGES);
        let path = d.dir().unwrap().join(DEVICE_TOML);
        let good = fs::read_to_string(&path).unwrap();
        let open_with = |text: &str| {
            fs::write(&path, text).unwrap();
            SimDevice::open(d.dir().unwrap()).unwrap_err()
        };
        let err = open_with(&good.replace("format = 1", "format = 2"));
        assert!(
            matches!(err, DeviceError::UnsupportedFormat { found: 2, .. }),
            "{err}"
        );
        let err = open_with(&good.replace("page_size = 1024", "page_size = 1000"));
        assert!(matches!(err, DeviceError::Geometry { .. }), "{err}");
        // A valid geometry that flash.bin does not match.
        let err = open_with(&good.replace("capacity = 262144", "capacity = 131072"));
        assert!(
            matches!(err, DeviceError::FlashSize { found: 262_144, .. }),
            "{err}"
        );
        let err = open_with(&good.replace("uid = \"d001\"", "uid = \"d0x1\""));
        assert!(
            matches!(err, DeviceError::BadValue { key: "uid", .. }),
            "{err}"
        );
        let err = open_with(&good.replace("uid = \"d001\"", "uid = \"\""));
        assert!(
            matches!(err, DeviceError::BadValue { key: "uid", .. }),
            "{err}"
        );
        let err = open_with(&format!("{good}extra = 1\n"));
        assert!(matches!(err, DeviceError::Toml { .. }), "{err}");
        let err = open_with("format = 1\n");
        assert!(matches!(err, DeviceError::Toml { .. }), "{err}");
        assert!(err.to_string().contains("device.toml"), "{err}");
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            SimDevice::open(d.dir().unwrap()),
            Err(DeviceError::NotADeviceDir { .. })
        ));
        assert!(matches!(
            SimDevice::open(tmp.path().join("nothing")),
            Err(DeviceError::NotFound { .. })
        ));
    }

    #[test]
    fn debug_port_of_a_device_obeys_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = new_device(&tmp, Geometry::LARGE_PAGES);
        d.protected_mut()
            .write_once(Field::AgreementKey, &[3; 32])
            .unwrap();
        d.flash_mut().program(0, &[1; 16]).unwrap();
        let ops = d.power().ops();
        assert_eq!(d.debug_port().read_flash(0, 2).unwrap(), [1, 1]);
        assert_eq!(
            d.debug_port().read_field(Field::AgreementKey).unwrap(),
            Some(vec![3; 32])
        );
        d.protected_mut().lock().unwrap();
        let mut port = d.debug_port();
        assert_eq!(port.read_flash(0, 2), Err(DebugError::ReadOutProtected));
        assert_eq!(
            port.read_field(Field::AgreementKey),
            Err(DebugError::SecretField(Field::AgreementKey))
        );
        assert_eq!(port.read_field(Field::Uid).unwrap(), Some(vec![0xD0, 0x01]));
        assert_eq!(port.write_flash(0, &[0]), Err(DebugError::WriteProtected));
        assert_eq!(d.power().ops(), ops + 1, "only the lock was an operation");
    }

    #[test]
    fn cut_at_every_operation_of_a_run() {
        // The MCUboot technique: count a clean run, then cut at each of its
        // operations in turn, reboot, and check what the cut left.
        fn run(d: &mut SimDevice) -> Result<(), FlashError> {
            let p = d.parts();
            p.flash.erase_page(0)?;
            p.flash.program(0, &[0x10; 16])?;
            p.flash.program(16, &[0x20; 16])?;
            p.protected
                .write_once(Field::OemKeys, b"keys")
                .map_err(|_| FlashError::PowerLoss)?;
            Ok(())
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut clean = new_device(&tmp, Geometry::SMALL_PAGES);
        let start = clean.power().ops();
        run(&mut clean).unwrap();
        let n = clean.power().ops() - start;
        assert_eq!(n, 4);
        for k in 1..=n {
            let tmp = tempfile::tempdir().unwrap();
            let mut d = new_device(&tmp, Geometry::SMALL_PAGES);
            d.flash_mut().raw_mut()[..32].fill(0);
            d.power().cut_after(k, CutMode::Before);
            assert_eq!(run(&mut d), Err(FlashError::PowerLoss), "cut at {k}");
            assert!(!d.power().is_on());
            d.reboot();
            assert!(d.power().is_on());
            let raw = &d.flash().raw()[..32];
            let expect_first: &[u8] = if k == 1 {
                &[0; 16]
            } else if k == 2 {
                &[0xFF; 16]
            } else {
                &[0x10; 16]
            };
            assert_eq!(&raw[..16], expect_first, "cut at {k}");
            assert!(d.protected().peek(Field::OemKeys).is_none(), "cut at {k}");
        }
    }

    #[test]
    fn seeded_rng_through_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = new_device(&tmp, Geometry::SMALL_PAGES);
        d.set_rng(SimRng::seeded(9));
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        d.parts().rng.fill(&mut a);
        SimRng::seeded(9).fill(&mut b);
        assert_eq!(a, b);
    }
}
