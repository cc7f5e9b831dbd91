// SPDX-License-Identifier: GPL-2.0

#include <linux/fs.h>

__rust_helper loff_t rust_helper_kernel_file_size(struct file *file)
{
	return i_size_read(file->f_mapping->host);
}
