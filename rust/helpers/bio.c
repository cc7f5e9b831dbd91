// SPDX-License-Identifier: GPL-2.0

#include <linux/bio.h>

__rust_helper struct bio_vec rust_helper_bio_iter_iovec(struct bio *bio, struct bvec_iter iter)
{
	return bio_iter_iovec(bio, iter);
}

__rust_helper void rust_helper_bio_advance_iter_single(const struct bio *bio,
						       struct bvec_iter *iter,
						       unsigned int bytes)
{
	bio_advance_iter_single(bio, iter, bytes);
}
