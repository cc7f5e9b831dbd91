// SPDX-License-Identifier: GPL-2.0

#include <linux/blk-mq.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_host.h>

__rust_helper void *rust_helper_scsi_cmd_priv(struct scsi_cmnd *cmd)
{
	return scsi_cmd_priv(cmd);
}

__rust_helper struct request *rust_helper_scsi_cmd_to_rq(struct scsi_cmnd *scmd)
{
	return scsi_cmd_to_rq(scmd);
}

__rust_helper void rust_helper_scsi_set_resid(struct scsi_cmnd *cmd, unsigned int resid)
{
	scsi_set_resid(cmd, resid);
}

__rust_helper void rust_helper_set_host_byte(struct scsi_cmnd *cmd, char status)
{
	set_host_byte(cmd, status);
}

__rust_helper void *rust_helper_shost_priv(struct Scsi_Host *shost)
{
	return shost_priv(shost);
}

__rust_helper u16 rust_helper_blk_mq_unique_tag_to_hwq(u32 unique_tag)
{
	return blk_mq_unique_tag_to_hwq(unique_tag);
}

__rust_helper struct Scsi_Host *rust_helper_dev_to_shost(struct device *dev)
{
	return dev_to_shost(dev);
}
