// SPDX-License-Identifier: GPL-2.0

#include <linux/spinlock.h>
#include <target/iscsi/iscsi_target_core.h>

/* The login thread state of a network portal, read under its lock as the C transports do. */
__rust_helper enum np_thread_state_table rust_helper_iscsit_np_thread_state(struct iscsi_np *np)
{
	enum np_thread_state_table state;

	spin_lock_bh(&np->np_thread_lock);
	state = np->np_thread_state;
	spin_unlock_bh(&np->np_thread_lock);
	return state;
}
