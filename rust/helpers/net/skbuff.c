// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>
#include <linux/net.h>
#include <linux/skbuff.h>

__rust_helper struct sk_buff *rust_helper_alloc_skb(unsigned int size, gfp_t priority)
{
	return alloc_skb(size, priority);
}

__rust_helper void rust_helper_kfree_skb(struct sk_buff *skb)
{
	kfree_skb(skb);
}

__rust_helper void rust_helper_skb_reserve(struct sk_buff *skb, int len)
{
	skb_reserve(skb, len);
}

__rust_helper int rust_helper_skb_tailroom(const struct sk_buff *skb)
{
	return skb_tailroom(skb);
}

__rust_helper unsigned int rust_helper_skb_headlen(const struct sk_buff *skb)
{
	return skb_headlen(skb);
}

__rust_helper void rust_helper_skb_reset_mac_header(struct sk_buff *skb)
{
	skb_reset_mac_header(skb);
}

__rust_helper void rust_helper_skb_reset_network_header(struct sk_buff *skb)
{
	skb_reset_network_header(skb);
}

__rust_helper unsigned char *rust_helper_skb_mac_header(const struct sk_buff *skb)
{
	return skb_mac_header(skb);
}

__rust_helper bool rust_helper_skb_mac_header_was_set(const struct sk_buff *skb)
{
	return skb_mac_header_was_set(skb);
}

__rust_helper struct skb_shared_info *rust_helper_skb_shinfo(struct sk_buff *skb)
{
	return skb_shinfo(skb);
}

__rust_helper struct ubuf_info *rust_helper_skb_zcopy(struct sk_buff *skb)
{
	return skb_zcopy(skb);
}

__rust_helper void rust_helper_skb_zcopy_set(struct sk_buff *skb, struct ubuf_info *uarg,
					     bool *have_ref)
{
	skb_zcopy_set(skb, uarg, have_ref);
}

__rust_helper void rust_helper_skb_add_rx_frag(struct sk_buff *skb, int i, struct page *page,
					       int off, int size, unsigned int truesize)
{
	skb_add_rx_frag(skb, i, page, off, size, truesize);
}

__rust_helper bool rust_helper_sendpage_ok(struct page *page)
{
	return sendpage_ok(page);
}

__rust_helper void rust_helper_get_page(struct page *page)
{
	get_page(page);
}
