// SPDX-License-Identifier: GPL-2.0

#include <linux/cpumask.h>
#include <linux/kthread.h>
#include <linux/sched.h>

__rust_helper int rust_helper_set_cpus_allowed_cpu(struct task_struct *p, unsigned int cpu)
{
	return set_cpus_allowed_ptr(p, cpumask_of(cpu));
}
