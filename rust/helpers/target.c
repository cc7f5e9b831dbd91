// SPDX-License-Identifier: GPL-2.0

#include <linux/spinlock.h>
#include <linux/workqueue.h>
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

/* Takes a command off its connection's list, under the list's lock, as the C transports do. */
__rust_helper void rust_helper_iscsit_conn_unlink_cmd(struct iscsit_conn *conn,
						      struct iscsit_cmd *cmd)
{
	spin_lock_bh(&conn->cmd_lock);
	if (!list_empty(&cmd->i_conn_node))
		list_del_init(&cmd->i_conn_node);
	spin_unlock_bh(&conn->cmd_lock);
}

__rust_helper bool rust_helper_schedule_delayed_work(struct delayed_work *dwork,
						     unsigned long delay)
{
	return schedule_delayed_work(dwork, delay);
}

/* Marks a command's data-out as complete, under its state lock (as ib_isert does). */
__rust_helper void rust_helper_iscsit_cmd_got_last_dataout(struct iscsit_cmd *cmd)
{
	spin_lock_bh(&cmd->istate_lock);
	cmd->cmd_flags |= ICF_GOT_LAST_DATAOUT;
	cmd->i_state = ISTATE_RECEIVED_LAST_DATAOUT;
	spin_unlock_bh(&cmd->istate_lock);
}
