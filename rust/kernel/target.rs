// SPDX-License-Identifier: GPL-2.0

//! The LIO SCSI target: fabric transports.
//!
//! Built only when the target core and the iSCSI target are part of the kernel image
//! (`CONFIG_TARGET_CORE=y`, `CONFIG_ISCSI_TARGET=y`), since the kernel crate links directly
//! against them.
//!
//! # Examples
//!
//! An iSCSI transport registers with the target ([`iscsit::Registration`]) while it serves
//! portals:
//!
//! ```
//! use kernel::target::iscsit::{Registration, Transport};
//!
//! /// Registers the transport `T` of the calling module; dropping the result unregisters it.
//! fn register<T: Transport>(module: &'static ThisModule) -> Result<Pin<KBox<Registration<T>>>> {
//!     KBox::pin_init(Registration::register(module), GFP_KERNEL)
//! }
//! ```
//!
//! C headers: [`include/target/target_core_base.h`](srctree/include/target/target_core_base.h),
//! [`include/target/iscsi/iscsi_transport.h`](srctree/include/target/iscsi/iscsi_transport.h)

pub mod iscsit;
