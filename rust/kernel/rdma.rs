// SPDX-License-Identifier: GPL-2.0

//! RDMA: the InfiniBand/RoCE/iWARP core and its connection manager.
//!
//! Built only when the RDMA core and `rdma_cm` are part of the kernel image
//! (`CONFIG_INFINIBAND=y`, `CONFIG_INFINIBAND_ADDR_TRANS=y`), since the kernel crate links
//! directly against them.
//!
//! C headers: [`include/rdma/ib_verbs.h`](srctree/include/rdma/ib_verbs.h),
//! [`include/rdma/rdma_cm.h`](srctree/include/rdma/rdma_cm.h)

pub mod cm;
pub mod rw;
mod sq;
pub mod verbs;
