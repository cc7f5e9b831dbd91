// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi wire format (virtio specification, "SCSI Host Device"), encoded by hand in
//! little endian (the byte order of VIRTIO_F_VERSION_1 devices and of x86 legacy devices).

/// Size of the CDB field of a request.
pub(crate) const CDB_SIZE: usize = 32;
/// Size of the sense field of a response.
pub(crate) const SENSE_SIZE: usize = 96;
/// `struct virtio_scsi_cmd_req`: lun[8], tag, task_attr, prio, crn, cdb[32].
pub(crate) const CMD_REQ_SIZE: usize = 8 + 8 + 3 + CDB_SIZE;
/// `struct virtio_scsi_cmd_resp`: sense_len, resid, status_qualifier, status, response,
/// sense[96].
pub(crate) const CMD_RESP_SIZE: usize = 4 + 4 + 2 + 1 + 1 + SENSE_SIZE;
/// `struct virtio_scsi_ctrl_tmf_req`: type, subtype, lun[8], tag.
pub(crate) const TMF_REQ_SIZE: usize = 4 + 4 + 8 + 8;
/// `struct virtio_scsi_event`: event, lun[8], reason.
pub(crate) const EVENT_SIZE: usize = 4 + 8 + 4;

/// The configuration space of a virtio-scsi device (`struct virtio_scsi_config`).
#[repr(C)]
pub(crate) struct Config {
    num_queues: u32,
    seg_max: u32,
    max_sectors: u32,
    cmd_per_lun: u32,
    event_info_size: u32,
    sense_size: u32,
    cdb_size: u32,
    max_channel: u16,
    max_target: u16,
    max_lun: u32,
}

/// Fields of [`Config`] the driver reads or writes.
pub(crate) mod config {
    use super::Config;
    use kernel::{
        virtio::ConfigField,
        virtio_config_field, //
    };

    pub(crate) const NUM_QUEUES: ConfigField<Config, u32> =
        virtio_config_field!(Config, num_queues, u32);
    pub(crate) const SEG_MAX: ConfigField<Config, u32> = virtio_config_field!(Config, seg_max, u32);
    pub(crate) const MAX_SECTORS: ConfigField<Config, u32> =
        virtio_config_field!(Config, max_sectors, u32);
    pub(crate) const CMD_PER_LUN: ConfigField<Config, u32> =
        virtio_config_field!(Config, cmd_per_lun, u32);
    pub(crate) const SENSE_SIZE: ConfigField<Config, u32> =
        virtio_config_field!(Config, sense_size, u32);
    pub(crate) const CDB_SIZE: ConfigField<Config, u32> =
        virtio_config_field!(Config, cdb_size, u32);
    pub(crate) const MAX_TARGET: ConfigField<Config, u16> =
        virtio_config_field!(Config, max_target, u16);
    pub(crate) const MAX_LUN: ConfigField<Config, u32> = virtio_config_field!(Config, max_lun, u32);
}

/// Feature bits.
pub(crate) const F_HOTPLUG: u32 = 1;
pub(crate) const F_CHANGE: u32 = 2;

/// Response codes of commands and task management functions.
pub(crate) mod response {
    pub(crate) const OK: u8 = 0;
    pub(crate) const OVERRUN: u8 = 1;
    pub(crate) const ABORTED: u8 = 2;
    pub(crate) const BAD_TARGET: u8 = 3;
    pub(crate) const RESET: u8 = 4;
    pub(crate) const BUSY: u8 = 5;
    pub(crate) const TRANSPORT_FAILURE: u8 = 6;
    pub(crate) const TARGET_FAILURE: u8 = 7;
    pub(crate) const NEXUS_FAILURE: u8 = 8;
    pub(crate) const FUNCTION_SUCCEEDED: u8 = 10;
}

/// Task management.
pub(crate) const T_TMF: u32 = 0;
pub(crate) const TMF_ABORT_TASK: u32 = 0;
pub(crate) const TMF_LOGICAL_UNIT_RESET: u32 = 5;
pub(crate) const TMF_QUERY_TASK: u32 = 6;

/// Events.
pub(crate) const T_TRANSPORT_RESET: u32 = 1;
pub(crate) const T_PARAM_CHANGE: u32 = 3;
pub(crate) const T_EVENTS_MISSED: u32 = 0x8000_0000;
pub(crate) const EVT_RESET_RESCAN: u32 = 1;
pub(crate) const EVT_RESET_REMOVED: u32 = 2;

/// Operation code of INQUIRY.
pub(crate) const INQUIRY: u8 = 0x12;

/// SAM status `RESERVATION CONFLICT`.
pub(crate) const SAM_STAT_RESERVATION_CONFLICT: u8 = 0x18;

/// Encodes the single-level LUN of `target`/`lun` (flat addressing for LUNs above 255).
pub(crate) fn encode_lun(out: &mut [u8], target: u32, lun: u64) {
    out[0] = 1;
    out[1] = target as u8;
    out[2] = ((lun >> 8) as u8) | 0x40;
    out[3] = lun as u8;
    out[4..8].fill(0);
}

/// Decodes the target and LUN of an event's LUN field.
pub(crate) fn decode_lun(lun: &[u8]) -> (u32, u64) {
    (
        u32::from(lun[1]),
        (u64::from(lun[2] & 0x3f) << 8) | u64::from(lun[3]),
    )
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Builds a command request header; the CDB is copied once, from the command into the header.
pub(crate) fn cmd_req(out: &mut [u8; CMD_REQ_SIZE], target: u32, lun: u64, tag: u64, cdb: &[u8]) {
    encode_lun(&mut out[0..8], target, lun);
    out[8..16].copy_from_slice(&tag.to_le_bytes());
    // task_attr SIMPLE, prio 0, crn 0.
    out[16..19].fill(0);
    let n = cdb.len().min(CDB_SIZE);
    out[19..19 + n].copy_from_slice(&cdb[..n]);
    out[19 + n..].fill(0);
}

/// A decoded command response.
pub(crate) struct CmdResp<'a> {
    pub(crate) sense: &'a [u8],
    pub(crate) resid: u32,
    pub(crate) status: u8,
    pub(crate) response: u8,
}

pub(crate) fn cmd_resp(b: &[u8; CMD_RESP_SIZE]) -> CmdResp<'_> {
    let sense_len = (le32(&b[0..4]) as usize).min(SENSE_SIZE);
    CmdResp {
        resid: le32(&b[4..8]),
        status: b[10],
        response: b[11],
        sense: &b[12..12 + sense_len],
    }
}

/// Builds a task management request.
pub(crate) fn tmf_req(out: &mut [u8; TMF_REQ_SIZE], subtype: u32, target: u32, lun: u64, tag: u64) {
    out[0..4].copy_from_slice(&T_TMF.to_le_bytes());
    out[4..8].copy_from_slice(&subtype.to_le_bytes());
    encode_lun(&mut out[8..16], target, lun);
    out[16..24].copy_from_slice(&tag.to_le_bytes());
}
