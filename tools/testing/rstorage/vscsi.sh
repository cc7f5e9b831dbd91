# SPDX-License-Identifier: GPL-2.0
#
# The virtio-scsi test topology, sourced by check.sh.
#
# vscsi_setup DIR: creates the disk images in DIR and sets
#   vscsi_qemu   QEMU options for three virtio-scsi-pci controllers:
#                scsi1q: 1 request queue, target 0 with LUNs 0 and 1
#                scsi2q: 2 request queues, targets 0-7
#                scsi4q: 4 request queues, target 0, and target 1 whose image
#                        fails every read of sector 4096 (QEMU blkdebug,
#                        model "ERRDISK")
#                and spare drives "hp" and "hp2" for hot-plug through QMP
#                (QEMU deletes a -drive with the device it was plugged into)
#   vscsi_env    environment for the guest test (RSTORAGE_VSCSI_*)
vscsi_setup() {
	local dir=$1 i opts=()
	mkdir -p "$dir"
	rm -f "$dir"/*.img
	disk() { # ID CONTROLLER TARGET LUN [MODEL]
		truncate -s 64M "$dir/$1.img"
		opts+=(-drive "file=$dir/$1.img,if=none,id=$1,format=raw,cache=none,file.locking=off"
			-device "scsi-hd,drive=$1,bus=$2.0,scsi-id=$3,lun=$4${5:+,product=$5}")
	}
	opts+=(-device virtio-scsi-pci,id=scsi1q,num_queues=1)
	disk d1q0 scsi1q 0 0
	disk d1q1 scsi1q 0 1
	opts+=(-device virtio-scsi-pci,id=scsi2q,num_queues=2)
	for i in 0 1 2 3 4 5 6 7; do disk "d2t$i" scsi2q "$i" 0; done
	opts+=(-device virtio-scsi-pci,id=scsi4q,num_queues=4)
	disk d4t0 scsi4q 0 0
	truncate -s 64M "$dir/err.img"
	printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "4096"\n' >"$dir/blkdebug.conf"
	opts+=(-drive "file=blkdebug:$dir/blkdebug.conf:$dir/err.img,if=none,id=err,format=raw,cache=none"
		-device "scsi-hd,drive=err,bus=scsi4q.0,scsi-id=1,lun=0,product=ERRDISK")
	# A drive for hot-plug tests: attached at run time (QMP device_add).
	truncate -s 64M "$dir/hp.img" "$dir/hp2.img"
	opts+=(-drive "file=$dir/hp.img,if=none,id=hp,format=raw,cache=none,file.locking=off")
	opts+=(-drive "file=$dir/hp2.img,if=none,id=hp2,format=raw,cache=none,file.locking=off")
	vscsi_qemu="${opts[*]}"
	vscsi_env=(RSTORAGE_VSCSI_DISKS=11 "RSTORAGE_VSCSI_QUEUES=1 2 4" RSTORAGE_VSCSI_ERR_SECTOR=4096)
}
