// SPDX-License-Identifier: GPL-2.0

//! The ATA over Ethernet wire format (AoE protocol 1, as `drivers/block/aoe`
//! speaks it): building request frames and parsing responses. Pure functions
//! over byte slices, so that every malformed frame is rejected here.

use kernel::prelude::*;

/// The AoE EtherType.
pub(crate) const ETH_P_AOE: u16 = 0x88a2;
/// Ethernet address length.
pub(crate) const ETH_ALEN: usize = 6;
/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// AoE header (Ethernet header included).
pub(crate) const AOE_HDR: usize = 24;
/// ATA argument header.
pub(crate) const ATA_HDR: usize = 12;
/// Config argument header.
pub(crate) const CFG_HDR: usize = 8;
/// Sector size.
pub(crate) const SECTOR: usize = 512;
/// Broadcast Ethernet address.
pub(crate) const BROADCAST: [u8; ETH_ALEN] = [0xff; ETH_ALEN];

const AOE_HVER: u8 = 0x10;
const AOEFL_RSP: u8 = 1 << 3;
const AOEFL_ERR: u8 = 1 << 2;
const AOECMD_ATA: u8 = 0;
const AOECMD_CFG: u8 = 1;
const AOEAFL_EXT: u8 = 1 << 6;
const AOEAFL_WRITE: u8 = 1;
const ATA_CMD_PIO_READ: u8 = 0x20;
const ATA_CMD_ID_ATA: u8 = 0xec;
/// ATA status bits that mean failure: ERR, DF, BSY, DRQ... as the C driver
/// checks (`cmdstat & 0xa9`).
const ATA_FAIL_MASK: u8 = 0xa9;

/// A shelf.slot address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addr {
    pub(crate) major: u16,
    pub(crate) minor: u8,
}

impl Addr {
    /// The wildcard address of discovery queries.
    pub(crate) const ANY: Addr = Addr {
        major: 0xffff,
        minor: 0xff,
    };
}

/// An ATA command carried by a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ata {
    /// ATA IDENTIFY DEVICE.
    Identify,
    /// Read `sectors` sectors at `lba`.
    Read { lba: u64, sectors: u8 },
    /// Write `sectors` sectors at `lba`; the data follows the header.
    Write { lba: u64, sectors: u8 },
}

/// Writes the Ethernet + AoE header into `f[..AOE_HDR]`.
fn put_header(
    f: &mut [u8],
    dst: &[u8; ETH_ALEN],
    src: &[u8; ETH_ALEN],
    addr: Addr,
    cmd: u8,
    tag: u32,
) {
    f[0..6].copy_from_slice(dst);
    f[6..12].copy_from_slice(src);
    f[12..14].copy_from_slice(&ETH_P_AOE.to_be_bytes());
    f[14] = AOE_HVER;
    f[15] = 0;
    f[16..18].copy_from_slice(&addr.major.to_be_bytes());
    f[18] = addr.minor;
    f[19] = cmd;
    f[20..24].copy_from_slice(&tag.to_be_bytes());
}

/// Length of the config query frame.
pub(crate) const CFG_QUERY_LEN: usize = AOE_HDR + CFG_HDR;

/// Builds a config query ("who is out there") into `f`, which must be
/// [`CFG_QUERY_LEN`] bytes.
pub(crate) fn build_cfg_query(f: &mut [u8], src: &[u8; ETH_ALEN], addr: Addr) {
    put_header(f, &BROADCAST, src, addr, AOECMD_CFG, 0);
    f[AOE_HDR..AOE_HDR + CFG_HDR].fill(0);
}

/// Length of an ATA request frame carrying `data` bytes.
pub(crate) const fn ata_len(data: usize) -> usize {
    AOE_HDR + ATA_HDR + data
}

/// Builds the headers of an ATA request into `f[..ata_len(0)]`. For a write,
/// the caller puts the data after them.
pub(crate) fn build_ata(
    f: &mut [u8],
    dst: &[u8; ETH_ALEN],
    src: &[u8; ETH_ALEN],
    addr: Addr,
    tag: u32,
    cmd: Ata,
    lba48: bool,
) {
    put_header(f, dst, src, addr, AOECMD_ATA, tag);
    let a = &mut f[AOE_HDR..AOE_HDR + ATA_HDR];
    a.fill(0);
    let (lba, sectors, write, command) = match cmd {
        Ata::Identify => (0, 1, false, ATA_CMD_ID_ATA),
        Ata::Read { lba, sectors } => (lba, sectors, false, ATA_CMD_PIO_READ),
        Ata::Write { lba, sectors } => (lba, sectors, true, ATA_CMD_PIO_READ | 0x10),
    };
    let ext = lba48 && !matches!(cmd, Ata::Identify);
    a[0] = if ext { AOEAFL_EXT } else { 0 } | if write { AOEAFL_WRITE } else { 0 };
    a[2] = sectors;
    a[3] = if ext { command | 0x04 } else { command };
    let b = lba.to_le_bytes();
    a[4..10].copy_from_slice(&b[..6]);
    if !ext && !matches!(cmd, Ata::Identify) {
        // LBA28: top nibble in the device register, with the LBA bit.
        a[7] = (a[7] & 0x0f) | 0xe0;
        a[8] = 0;
        a[9] = 0;
    }
}

/// The most header bytes [`parse`] looks at: AoE header and the larger of the
/// config and ATA headers. Data follows.
pub(crate) const HEAD_LEN: usize = AOE_HDR + if CFG_HDR > ATA_HDR { CFG_HDR } else { ATA_HDR };

/// A response frame, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Response<'a> {
    /// Answer to a config query.
    Cfg {
        addr: Addr,
        src: [u8; ETH_ALEN],
        bufcnt: u16,
        fwver: u16,
        /// Most sectors the target takes in one frame (0: unknown).
        scnt: u8,
    },
    /// Answer to an ATA command.
    Ata {
        addr: Addr,
        src: [u8; ETH_ALEN],
        tag: u32,
        /// Whether the target reported success.
        ok: bool,
        /// The data after the ATA header (read data, IDENTIFY data).
        data: &'a [u8],
    },
}

/// Why a frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Shorter than its headers.
    Short,
    /// Not a response, or an unknown version or command.
    NotResponse,
    /// The target reported an AoE-level error.
    AoeError,
    /// A reserved or wildcard address.
    BadAddr,
}

/// Parses a received frame, `f` starting at the Ethernet header: the whole
/// frame, or its first [`HEAD_LEN`] bytes (then `data` is what `f` holds after
/// the headers).
pub(crate) fn parse(f: &[u8]) -> Result<Response<'_>, Reject> {
    if f.len() < AOE_HDR {
        return Err(Reject::Short);
    }
    if u16::from_be_bytes([f[12], f[13]]) != ETH_P_AOE
        || f[14] & 0xf0 != AOE_HVER
        || f[14] & AOEFL_RSP == 0
    {
        return Err(Reject::NotResponse);
    }
    if f[14] & AOEFL_ERR != 0 {
        return Err(Reject::AoeError);
    }
    let addr = Addr {
        major: u16::from_be_bytes([f[16], f[17]]),
        minor: f[18],
    };
    if addr.major == Addr::ANY.major || addr.minor == Addr::ANY.minor {
        return Err(Reject::BadAddr);
    }
    let tag = u32::from_be_bytes([f[20], f[21], f[22], f[23]]);
    let mut src = [0u8; ETH_ALEN];
    src.copy_from_slice(&f[6..12]);
    let body = &f[AOE_HDR..];
    match f[19] {
        AOECMD_CFG => {
            if body.len() < CFG_HDR {
                return Err(Reject::Short);
            }
            Ok(Response::Cfg {
                addr,
                src,
                bufcnt: u16::from_be_bytes([body[0], body[1]]),
                fwver: u16::from_be_bytes([body[2], body[3]]),
                scnt: body[4],
            })
        }
        AOECMD_ATA => {
            if body.len() < ATA_HDR {
                return Err(Reject::Short);
            }
            Ok(Response::Ata {
                addr,
                src,
                tag,
                ok: body[3] & ATA_FAIL_MASK == 0,
                data: &body[ATA_HDR..],
            })
        }
        _ => Err(Reject::NotResponse),
    }
}

/// What IDENTIFY DEVICE data says about a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Capacity in 512-byte sectors.
    pub(crate) sectors: u64,
    /// Whether the disk takes 48-bit LBAs.
    pub(crate) lba48: bool,
    /// Cylinders, heads, sectors per track, as the C driver reports them.
    pub(crate) chs: (u16, u8, u8),
}

/// Parses IDENTIFY DEVICE data (512 bytes, little-endian words).
pub(crate) fn parse_identify(id: &[u8]) -> Option<Identity> {
    if id.len() < SECTOR {
        return None;
    }
    let word = |w: usize| u16::from_le_bytes([id[2 * w], id[2 * w + 1]]);
    // Words 83 and 86: command sets supported and enabled; bit 10 is LBA48.
    let lba48 = (word(83) | word(86)) & (1 << 10) != 0;
    let sectors = if lba48 {
        (0..4).fold(0u64, |acc, i| acc | (u64::from(word(100 + i)) << (16 * i)))
    } else {
        u64::from(word(60)) | (u64::from(word(61)) << 16)
    };
    // LBA48 disks: 255 heads of 63 sectors (the C driver truncates the
    // capacity to 16 bits before dividing; we saturate the quotient
    // instead). LBA28 disks: words 54-56 (current cylinders, heads,
    // sectors per track).
    let chs = if lba48 {
        let cyl = (sectors / (255 * 63)).min(u64::from(u16::MAX)) as u16;
        (cyl, 255, 63)
    } else {
        (word(54), word(55) as u8, word(56) as u8)
    };
    Some(Identity {
        sectors,
        lba48,
        chs,
    })
}

/// Puts the IDENTIFY strings (serial number, firmware revision, model:
/// words 10-19, 23-26 and 27-46) in reading order, as the C driver does
/// before it keeps the data for `HDIO_GET_IDENTITY` (`ata_ident_fixstring()`:
/// ATA stores two characters per word, the first in the high byte).
pub(crate) fn fix_identify_strings(id: &mut [u8; SECTOR]) {
    for (first, end) in [(10, 20), (23, 47)] {
        for w in first..end {
            id.swap(2 * w, 2 * w + 1);
        }
    }
}

/// Most whole sectors an ATA frame carries on a link with `mtu`.
pub(crate) fn sectors_for_mtu(mtu: u32) -> usize {
    (mtu as usize).saturating_sub(AOE_HDR - ETH_HLEN + ATA_HDR) / SECTOR
}

/// A MAC address, printed as the C driver's `%pm` (12 hex digits).
pub(crate) struct Mac<'a>(pub(crate) &'a [u8; ETH_ALEN]);

impl core::fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[kunit_tests(raoe_wire)]
mod tests {
    use super::*;

    const SRC: [u8; ETH_ALEN] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; ETH_ALEN] = [2, 0, 0, 0, 0, 2];

    /// Turns a request we built into the response a target would send.
    fn respond(f: &mut [u8]) {
        f[14] |= AOEFL_RSP;
    }

    #[test]
    fn ata_read_roundtrip() {
        let mut f = [0u8; ata_len(0)];
        let a = Addr { major: 7, minor: 3 };
        build_ata(
            &mut f,
            &DST,
            &SRC,
            a,
            0x1234_0005,
            Ata::Read {
                lba: 0x0102_0304_0506,
                sectors: 2,
            },
            true,
        );
        assert_eq!(f[12..14], [0x88, 0xa2]);
        assert_eq!(f[AOE_HDR], AOEAFL_EXT);
        assert_eq!(f[AOE_HDR + 3], 0x24);
        assert_eq!(f[AOE_HDR + 4..AOE_HDR + 10], [6, 5, 4, 3, 2, 1]);
        // Our own request is not a response.
        assert_eq!(parse(&f), Err(Reject::NotResponse));
        respond(&mut f);
        // The target replaces the command with its status: DRDY.
        f[AOE_HDR + 3] = 0x40;
        match parse(&f) {
            Ok(Response::Ata {
                addr,
                src,
                tag,
                ok,
                data,
            }) => {
                assert_eq!(addr, a);
                assert_eq!(src, SRC);
                assert_eq!(tag, 0x1234_0005);
                assert!(ok);
                assert!(data.is_empty());
            }
            other => panic!("unexpected {:?}", other),
        }
    }

    #[test]
    fn lba28_write_and_errors() {
        let mut f = [0u8; ata_len(0)];
        let a = Addr { major: 0, minor: 0 };
        build_ata(
            &mut f,
            &DST,
            &SRC,
            a,
            1,
            Ata::Write {
                lba: 0x0abc_def0,
                sectors: 1,
            },
            false,
        );
        assert_eq!(f[AOE_HDR], AOEAFL_WRITE);
        assert_eq!(f[AOE_HDR + 3], 0x30);
        assert_eq!(f[AOE_HDR + 7], 0xea);
        respond(&mut f);
        f[AOE_HDR + 3] = 0x51; // DRDY | DSC | ERR
        assert!(matches!(parse(&f), Ok(Response::Ata { ok: false, .. })));
        f[14] |= AOEFL_ERR;
        assert_eq!(parse(&f), Err(Reject::AoeError));
        assert_eq!(parse(&f[..AOE_HDR + 3]), Err(Reject::AoeError));
        f[14] &= !AOEFL_ERR;
        assert_eq!(parse(&f[..AOE_HDR + 3]), Err(Reject::Short));
        assert_eq!(parse(&f[..10]), Err(Reject::Short));
    }

    #[test]
    fn cfg_and_bad_addresses() {
        let mut f = [0u8; CFG_QUERY_LEN];
        build_cfg_query(&mut f, &SRC, Addr::ANY);
        assert_eq!(f[..6], BROADCAST);
        respond(&mut f);
        assert_eq!(parse(&f), Err(Reject::BadAddr));
        f[16..19].copy_from_slice(&[0, 1, 2]);
        f[AOE_HDR..AOE_HDR + 5].copy_from_slice(&[0, 16, 0x40, 0x19, 2]);
        assert_eq!(
            parse(&f),
            Ok(Response::Cfg {
                addr: Addr { major: 1, minor: 2 },
                src: SRC,
                bufcnt: 16,
                fwver: 0x4019,
                scnt: 2
            })
        );
        assert_eq!(parse(&f[..AOE_HDR + 4]), Err(Reject::Short));
        f[19] = 9;
        assert_eq!(parse(&f), Err(Reject::NotResponse));
    }

    #[test]
    fn identify_capacity() {
        let mut id = [0u8; SECTOR];
        id[120..122].copy_from_slice(&0x5678u16.to_le_bytes());
        id[122..124].copy_from_slice(&0x0012u16.to_le_bytes());
        id[108..110].copy_from_slice(&1024u16.to_le_bytes());
        id[110..112].copy_from_slice(&16u16.to_le_bytes());
        id[112..114].copy_from_slice(&63u16.to_le_bytes());
        assert_eq!(
            parse_identify(&id),
            Some(Identity {
                sectors: 0x0012_5678,
                lba48: false,
                chs: (1024, 16, 63),
            })
        );
        id[166] = 0x00;
        id[167] = 0x04;
        id[200..208].copy_from_slice(&0x0000_0123_4567_89abu64.to_le_bytes());
        assert_eq!(
            parse_identify(&id),
            Some(Identity {
                sectors: 0x0123_4567_89ab,
                lba48: true,
                chs: (u16::MAX, 255, 63),
            })
        );
        assert_eq!(parse_identify(&id[..511]), None);
        id[54] = b'o';
        id[55] = b'A';
        id[92] = b'X';
        fix_identify_strings(&mut id);
        assert_eq!((id[54], id[55], id[92], id[93]), (b'A', b'o', 0, b'X'));
        assert_eq!(sectors_for_mtu(1500), 2);
        assert_eq!(sectors_for_mtu(9000), 17);
        assert_eq!(sectors_for_mtu(20), 0);
    }
}
