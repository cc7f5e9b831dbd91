// SPDX-License-Identifier: GPL-2.0

//! The target side of the AoE wire format (protocol version 1): parsing requests, building
//! responses and the IDENTIFY DEVICE data. Pure functions over byte slices, so that every
//! malformed frame is rejected here.

use kernel::prelude::*;

/// The AoE EtherType.
pub(crate) const ETH_P_AOE: u16 = 0x88a2;
/// Ethernet address length.
pub(crate) const ETH_ALEN: usize = 6;
/// AoE header, Ethernet header included.
pub(crate) const AOE_HDR: usize = 24;
/// ATA argument header.
pub(crate) const ATA_HDR: usize = 12;
/// Config argument header.
pub(crate) const CFG_HDR: usize = 8;
/// Sector size.
pub(crate) const SECTOR: usize = 512;
/// Longest config string.
pub(crate) const MAX_CONFIG: usize = 1024;

const AOE_VERSION: u8 = 1;
const AOEFL_RSP: u8 = 1 << 3;
const AOEFL_ERR: u8 = 1 << 2;
const AOECMD_ATA: u8 = 0;
const AOECMD_CFG: u8 = 1;
const AOEAFL_EXT: u8 = 1 << 6;

/// ATA status: device ready.
const ATA_DRDY: u8 = 0x40;
/// ATA status: error (the error register says which).
const ATA_ERR: u8 = 0x01;
/// ATA error: command aborted.
const ATA_ABORTED: u8 = 0x04;

/// AoE error codes (AoE protocol, section 2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AoeError {
    /// Unrecognized command code.
    Command = 1,
    /// The config string is already set and differs (config "set if empty").
    ConfigSet = 4,
    /// Unsupported protocol version.
    Version = 5,
}

/// A shelf.slot address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addr {
    pub(crate) major: u16,
    pub(crate) minor: u8,
}

impl Addr {
    /// Whether a request to `to` is for this address (wildcards: shelf 0xffff, slot 0xff).
    pub(crate) fn accepts(&self, to: Addr) -> bool {
        (to.major == self.major || to.major == 0xffff)
            && (to.minor == self.minor || to.minor == 0xff)
    }
}

/// The AoE header of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The initiator's Ethernet address: where the response goes.
    pub(crate) src: [u8; ETH_ALEN],
    /// The target address the request is for (may hold wildcards).
    pub(crate) to: Addr,
    pub(crate) cmd: u8,
    pub(crate) tag: u32,
}

/// An ATA command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtaCmd {
    /// READ SECTORS (EXT).
    Read,
    /// WRITE SECTORS (EXT).
    Write,
    /// IDENTIFY DEVICE.
    Identify,
    /// FLUSH CACHE (EXT).
    Flush,
    /// Anything else: answered "aborted".
    Other,
}

/// The ATA argument header of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AtaArgs {
    /// The header as received: echoed in the response with the status filled in.
    pub(crate) raw: [u8; ATA_HDR],
    pub(crate) cmd: AtaCmd,
    /// The LBA, 28 or 48 bits as the request's extended flag says.
    pub(crate) lba: u64,
    pub(crate) sectors: u8,
}

/// A config command (the low nibble of the config header's fourth byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigCmd {
    /// Read the config string.
    Read,
    /// Answer only if the config string equals the request's.
    TestExact,
    /// Answer only if the request's string is a prefix of the config string.
    TestPrefix,
    /// Set the config string if it is empty.
    SetIfEmpty,
    /// Set the config string.
    ForceSet,
}

/// A parsed request frame; slices point into the frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    /// An ATA command, with the data that follows its header (a write's sectors).
    Ata {
        hdr: Header,
        args: AtaArgs,
        data: &'a [u8],
    },
    /// A config query or set, with its config string.
    Config {
        hdr: Header,
        cmd: ConfigCmd,
        string: &'a [u8],
    },
    /// A command this target does not know: answered with an AoE error.
    Unknown { hdr: Header, error: AoeError },
}

/// Why a frame is dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Shorter than its headers.
    Short,
    /// Not an AoE frame.
    NotAoe,
    /// A response (another target's, or our own echoed).
    Response,
    /// A config command with an unknown code, or a string longer than the frame.
    BadConfig,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Parses the Ethernet and AoE headers of `f`.
pub(crate) fn parse_header(f: &[u8]) -> Result<Header, Discard> {
    if f.len() < AOE_HDR {
        return Err(Discard::Short);
    }
    if be16(&f[12..14]) != ETH_P_AOE {
        return Err(Discard::NotAoe);
    }
    if f[14] & AOEFL_RSP != 0 {
        return Err(Discard::Response);
    }
    let mut src = [0; ETH_ALEN];
    src.copy_from_slice(&f[6..12]);
    Ok(Header {
        src,
        to: Addr {
            major: be16(&f[16..18]),
            minor: f[18],
        },
        cmd: f[19],
        tag: u32::from_be_bytes([f[20], f[21], f[22], f[23]]),
    })
}

/// Parses a request frame, `f` starting at the Ethernet header.
pub(crate) fn parse(f: &[u8]) -> Result<Request<'_>, Discard> {
    let hdr = parse_header(f)?;
    if f[14] >> 4 != AOE_VERSION {
        return Ok(Request::Unknown {
            hdr,
            error: AoeError::Version,
        });
    }
    match hdr.cmd {
        AOECMD_ATA => {
            let a = f.get(AOE_HDR..AOE_HDR + ATA_HDR).ok_or(Discard::Short)?;
            let mut raw = [0; ATA_HDR];
            raw.copy_from_slice(a);
            let ext = a[0] & AOEAFL_EXT != 0;
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(&a[4..10]);
            let lba = if ext {
                u64::from_le_bytes(b)
            } else {
                // LBA28: the top nibble sits in the device register's low bits.
                u64::from_le_bytes(b) & 0x0fff_ffff
            };
            let cmd = match a[3] {
                0x20 | 0x24 => AtaCmd::Read,
                0x30 | 0x34 => AtaCmd::Write,
                0xec => AtaCmd::Identify,
                0xe7 | 0xea => AtaCmd::Flush,
                _ => AtaCmd::Other,
            };
            Ok(Request::Ata {
                hdr,
                args: AtaArgs {
                    raw,
                    cmd,
                    lba,
                    sectors: a[2],
                },
                data: &f[AOE_HDR + ATA_HDR..],
            })
        }
        AOECMD_CFG => {
            let c = f.get(AOE_HDR..AOE_HDR + CFG_HDR).ok_or(Discard::Short)?;
            let cmd = match c[5] & 0x0f {
                0 => ConfigCmd::Read,
                1 => ConfigCmd::TestExact,
                2 => ConfigCmd::TestPrefix,
                3 => ConfigCmd::SetIfEmpty,
                4 => ConfigCmd::ForceSet,
                _ => return Err(Discard::BadConfig),
            };
            let len = usize::from(be16(&c[6..8]));
            let string = f
                .get(AOE_HDR + CFG_HDR..AOE_HDR + CFG_HDR + len)
                .ok_or(Discard::BadConfig)?;
            Ok(Request::Config { hdr, cmd, string })
        }
        _ => Ok(Request::Unknown {
            hdr,
            error: AoeError::Command,
        }),
    }
}

/// Most whole sectors one frame carries on a link with `mtu`: the payload holds the AoE header
/// (without the Ethernet header) and the ATA header.
pub(crate) fn sectors_for_mtu(mtu: u32) -> u8 {
    let payload = (mtu as usize).saturating_sub(AOE_HDR - 14 + ATA_HDR);
    (payload / SECTOR).min(255) as u8
}

/// Writes the Ethernet and AoE header of a response into `f[..AOE_HDR]`.
fn put_header(
    f: &mut [u8],
    req: &Header,
    mac: &[u8; ETH_ALEN],
    addr: Addr,
    error: Option<AoeError>,
) {
    f[0..6].copy_from_slice(&req.src);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&ETH_P_AOE.to_be_bytes());
    f[14] = AOE_VERSION << 4 | AOEFL_RSP | if error.is_some() { AOEFL_ERR } else { 0 };
    f[15] = error.map_or(0, |e| e as u8);
    f[16..18].copy_from_slice(&addr.major.to_be_bytes());
    f[18] = addr.minor;
    f[19] = req.cmd;
    f[20..24].copy_from_slice(&req.tag.to_be_bytes());
}

/// Length of an ATA response carrying `data` bytes.
pub(crate) const fn ata_len(data: usize) -> usize {
    AOE_HDR + ATA_HDR + data
}

/// Builds the headers of an ATA response into `f[..ata_len(0)]`: the request's ATA header with
/// the status of the command (`ok`: device ready; else aborted). A read's data follows, put
/// there by the caller.
pub(crate) fn build_ata(
    f: &mut [u8],
    req: &Header,
    args: &AtaArgs,
    mac: &[u8; ETH_ALEN],
    addr: Addr,
    ok: bool,
) {
    put_header(f, req, mac, addr, None);
    let a = &mut f[AOE_HDR..AOE_HDR + ATA_HDR];
    a.copy_from_slice(&args.raw);
    if ok {
        a[1] = 0;
        a[3] = ATA_DRDY;
    } else {
        a[1] = ATA_ABORTED;
        a[3] = ATA_DRDY | ATA_ERR;
    }
}

/// What a config response says about the target.
pub(crate) struct ConfigInfo<'a> {
    /// Requests the target buffers: the most an initiator keeps outstanding.
    pub(crate) bufcnt: u16,
    pub(crate) firmware: u16,
    /// Most sectors per ATA request.
    pub(crate) max_sectors: u8,
    pub(crate) string: &'a [u8],
}

/// Length of a config response with a config string of `len` bytes.
pub(crate) const fn config_len(len: usize) -> usize {
    AOE_HDR + CFG_HDR + len
}

/// Builds a config response into `f[..config_len(info.string.len())]`.
pub(crate) fn build_config(
    f: &mut [u8],
    req: &Header,
    cmd: ConfigCmd,
    mac: &[u8; ETH_ALEN],
    addr: Addr,
    info: &ConfigInfo<'_>,
) {
    put_header(f, req, mac, addr, None);
    let c = &mut f[AOE_HDR..AOE_HDR + CFG_HDR];
    c[0..2].copy_from_slice(&info.bufcnt.to_be_bytes());
    c[2..4].copy_from_slice(&info.firmware.to_be_bytes());
    c[4] = info.max_sectors;
    c[5] = AOE_VERSION << 4 | cmd as u8;
    c[6..8].copy_from_slice(&(info.string.len() as u16).to_be_bytes());
    f[AOE_HDR + CFG_HDR..AOE_HDR + CFG_HDR + info.string.len()].copy_from_slice(info.string);
}

/// Length of an error response: the AoE header and the request's argument header, zeroed.
pub(crate) const ERROR_LEN: usize = AOE_HDR + ATA_HDR;

/// Builds an AoE error response into `f[..ERROR_LEN]`.
pub(crate) fn build_error(
    f: &mut [u8],
    req: &Header,
    mac: &[u8; ETH_ALEN],
    addr: Addr,
    error: AoeError,
) {
    put_header(f, req, mac, addr, Some(error));
    f[AOE_HDR..ERROR_LEN].fill(0);
}

/// Decides what a config command does with the current config string `current`: `Some(new)`
/// to answer (after setting the string to `new` if it differs), `None` to stay silent, or an
/// AoE error to answer with.
pub(crate) fn config_action<'a>(
    cmd: ConfigCmd,
    current: &'a [u8],
    string: &'a [u8],
) -> Result<Option<&'a [u8]>, AoeError> {
    match cmd {
        ConfigCmd::Read => Ok(Some(current)),
        ConfigCmd::TestExact => Ok((current == string).then_some(current)),
        ConfigCmd::TestPrefix => Ok(current.starts_with(string).then_some(current)),
        ConfigCmd::SetIfEmpty if current.is_empty() || current == string => Ok(Some(string)),
        ConfigCmd::SetIfEmpty => Err(AoeError::ConfigSet),
        ConfigCmd::ForceSet => Ok(Some(string)),
    }
}

/// Writes an ATA string (two characters per word, first in the high byte) into `words`,
/// padded with spaces.
fn put_string(id: &mut [u8; SECTOR], word: usize, words: usize, s: &[u8]) {
    for i in 0..words * 2 {
        let c = s.get(i).copied().unwrap_or(b' ');
        // Byte i of the string is the high byte of its word when i is even.
        id[word * 2 + (i ^ 1)] = c;
    }
}

fn put_word(id: &mut [u8; SECTOR], word: usize, v: u16) {
    id[word * 2..word * 2 + 2].copy_from_slice(&v.to_le_bytes());
}

/// Builds the IDENTIFY DEVICE data of a disk of `sectors` sectors: LBA48, the capacity in
/// words 60-61 (LBA28, saturated) and 100-103, CHS geometry 255 heads × 63 sectors, serial
/// `serial`, firmware and model strings.
pub(crate) fn identify(sectors: u64, serial: &[u8]) -> [u8; SECTOR] {
    let mut id = [0u8; SECTOR];
    let cylinders = (sectors / (255 * 63)).min(16383) as u16;
    put_word(&mut id, 1, cylinders);
    put_word(&mut id, 3, 255);
    put_word(&mut id, 6, 63);
    put_string(&mut id, 10, 10, serial);
    put_string(&mut id, 23, 4, b"1");
    put_string(&mut id, 27, 20, b"raoe_target");
    // Capabilities: LBA supported.
    put_word(&mut id, 49, 1 << 9);
    // Current CHS geometry and its capacity (obsolete, read by LBA28 initiators).
    put_word(&mut id, 53, 1);
    put_word(&mut id, 54, cylinders);
    put_word(&mut id, 55, 255);
    put_word(&mut id, 56, 63);
    let chs = u32::from(cylinders) * 255 * 63;
    put_word(&mut id, 57, chs as u16);
    put_word(&mut id, 58, (chs >> 16) as u16);
    let lba28 = sectors.min(0x0fff_ffff) as u32;
    put_word(&mut id, 60, lba28 as u16);
    put_word(&mut id, 61, (lba28 >> 16) as u16);
    // Command sets supported and enabled: LBA48 (bit 10); bit 14 set, bit 15 clear.
    put_word(&mut id, 83, 1 << 14 | 1 << 10);
    put_word(&mut id, 86, 1 << 10);
    put_word(&mut id, 84, 1 << 14);
    put_word(&mut id, 87, 1 << 14);
    id[200..208].copy_from_slice(&sectors.to_le_bytes());
    id
}

#[kunit_tests(raoe_target_proto)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn request(cmd: u8, addr: Addr, tag: u32, args: &[u8]) -> KVec<u8> {
        let mut f = KVec::new();
        f.extend_from_slice(&MAC, GFP_KERNEL).unwrap();
        f.extend_from_slice(&PEER, GFP_KERNEL).unwrap();
        f.extend_from_slice(&ETH_P_AOE.to_be_bytes(), GFP_KERNEL)
            .unwrap();
        f.extend_from_slice(&[0x10, 0], GFP_KERNEL).unwrap();
        f.extend_from_slice(&addr.major.to_be_bytes(), GFP_KERNEL)
            .unwrap();
        f.extend_from_slice(&[addr.minor, cmd], GFP_KERNEL).unwrap();
        f.extend_from_slice(&tag.to_be_bytes(), GFP_KERNEL).unwrap();
        f.extend_from_slice(args, GFP_KERNEL).unwrap();
        f
    }

    const ADDR: Addr = Addr { major: 7, minor: 3 };

    #[test]
    fn lba48_read() {
        // EXT flag, 2 sectors, READ SECTORS EXT, LBA 0x0102_0304_0506.
        let f = request(0, ADDR, 42, &[0x40, 0, 2, 0x24, 6, 5, 4, 3, 2, 1, 0, 0]);
        let Ok(Request::Ata { hdr, args, data }) = parse(&f) else {
            panic!("not an ATA request");
        };
        assert_eq!(hdr.tag, 42);
        assert_eq!(hdr.src, PEER);
        assert_eq!(args.cmd, AtaCmd::Read);
        assert_eq!(args.lba, 0x0102_0304_0506);
        assert_eq!(args.sectors, 2);
        assert!(data.is_empty());
    }

    #[test]
    fn lba28_write_masks_device_register() {
        let mut args = KVec::new();
        args.extend_from_slice(
            &[0x01, 0, 1, 0x30, 0x78, 0x56, 0x34, 0xe2, 0, 0, 0, 0],
            GFP_KERNEL,
        )
        .unwrap();
        args.extend_from_slice(&[0xaa; SECTOR], GFP_KERNEL).unwrap();
        let f = request(0, ADDR, 1, &args);
        let Ok(Request::Ata { args, data, .. }) = parse(&f) else {
            panic!("not an ATA request");
        };
        assert_eq!(args.cmd, AtaCmd::Write);
        assert_eq!(args.lba, 0x0234_5678);
        assert_eq!(data.len(), SECTOR);
    }

    #[test]
    fn malformed_frames_are_dropped() {
        let f = request(0, ADDR, 1, &[0x40, 0, 2]);
        assert_eq!(parse(&f), Err(Discard::Short));
        assert_eq!(parse(&f[..20]), Err(Discard::Short));
        let mut r = request(1, ADDR, 1, &[0; CFG_HDR]);
        r[14] |= AOEFL_RSP;
        assert_eq!(parse(&r), Err(Discard::Response));
        // A config string longer than the frame.
        let c = request(1, ADDR, 1, &[0, 0, 0, 0, 0, 0, 0, 9, b'x']);
        assert_eq!(parse(&c), Err(Discard::BadConfig));
        let u = request(9, ADDR, 1, &[]);
        assert!(matches!(
            parse(&u),
            Ok(Request::Unknown {
                error: AoeError::Command,
                ..
            })
        ));
    }

    #[test]
    fn wildcards() {
        assert!(ADDR.accepts(Addr {
            major: 0xffff,
            minor: 0xff
        }));
        assert!(ADDR.accepts(Addr {
            major: 7,
            minor: 0xff
        }));
        assert!(!ADDR.accepts(Addr { major: 7, minor: 4 }));
        assert!(!ADDR.accepts(Addr {
            major: 8,
            minor: 0xff
        }));
    }

    #[test]
    fn config_commands() {
        assert_eq!(
            config_action(ConfigCmd::Read, b"a", b""),
            Ok(Some(&b"a"[..]))
        );
        assert_eq!(config_action(ConfigCmd::TestExact, b"ab", b"a"), Ok(None));
        assert_eq!(
            config_action(ConfigCmd::TestPrefix, b"ab", b"a"),
            Ok(Some(&b"ab"[..]))
        );
        assert_eq!(
            config_action(ConfigCmd::SetIfEmpty, b"", b"x"),
            Ok(Some(&b"x"[..]))
        );
        assert_eq!(
            config_action(ConfigCmd::SetIfEmpty, b"y", b"x"),
            Err(AoeError::ConfigSet)
        );
        assert_eq!(
            config_action(ConfigCmd::ForceSet, b"y", b"x"),
            Ok(Some(&b"x"[..]))
        );
    }

    #[test]
    fn responses() {
        let f = request(
            0,
            ADDR,
            0x0a0b_0c0d,
            &[0x40, 0, 1, 0x24, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let Ok(Request::Ata { hdr, args, .. }) = parse(&f) else {
            panic!("not an ATA request");
        };
        let mut r = [0u8; ata_len(0)];
        build_ata(&mut r, &hdr, &args, &MAC, ADDR, false);
        assert_eq!(&r[0..6], &PEER);
        assert_eq!(&r[6..12], &MAC);
        assert_eq!(r[14], 0x18);
        assert_eq!(&r[20..24], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(r[AOE_HDR + 3], ATA_DRDY | ATA_ERR);
        assert_eq!(r[AOE_HDR + 1], ATA_ABORTED);
        let mut e = [0u8; ERROR_LEN];
        build_error(&mut e, &hdr, &MAC, ADDR, AoeError::Command);
        assert_eq!((e[14], e[15]), (0x1c, 1));
    }

    #[test]
    fn identify_data() {
        let id = identify(1 << 40, b"7.3");
        let word = |w: usize| u16::from_le_bytes([id[w * 2], id[w * 2 + 1]]);
        assert_ne!(word(83) & (1 << 10), 0);
        assert_eq!(
            u64::from_le_bytes(id[200..208].try_into().unwrap()),
            1 << 40
        );
        assert_eq!((word(60), word(61)), (0xffff, 0x0fff));
        // "7." in word 10: '7' in the high byte.
        assert_eq!(word(10), u16::from_be_bytes([b'7', b'.']));
        assert_eq!(sectors_for_mtu(1500), 2);
        assert_eq!(sectors_for_mtu(9000), 17);
    }
}
