// SPDX-License-Identifier: GPL-2.0

#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

/* The iSCSI target's own locks are taken with bottom halves disabled. */
__rust_helper void rust_helper_spin_lock_bh(spinlock_t *lock)
{
	spin_lock_bh(lock);
}

__rust_helper void rust_helper_spin_unlock_bh(spinlock_t *lock)
{
	spin_unlock_bh(lock);
}

__rust_helper int rust_helper_list_empty(const struct list_head *head)
{
	return list_empty(head);
}

__rust_helper void rust_helper_list_del_init(struct list_head *entry)
{
	list_del_init(entry);
}

__rust_helper bool rust_helper_schedule_delayed_work(struct delayed_work *dwork,
						     unsigned long delay)
{
	return schedule_delayed_work(dwork, delay);
}
