// SPDX-License-Identifier: GPL-2.0
/*
 * iser_peer: a minimal iSER initiator that connects to a target portal over
 * RDMA and sends one crafted message, to see how the target copes with what
 * the kernel's initiator never sends.
 *
 * Usage: iser_peer ADDR PORT MODE SECONDS
 *
 * MODE:
 *   short     a 10-byte message (shorter than the iSER and iSCSI headers)
 *   overlong  a login request whose header declares 4096 data bytes, sent
 *             without them
 *   opcode    a message with an unknown iSER opcode
 *   scsi      a SCSI command as the first PDU, before any login (out of
 *             order)
 *
 * It then waits up to SECONDS for the target's answer and prints one line
 * per event: "rx opcode 0xNN class N detail N" for each PDU received (class
 * and detail are the login status fields), "disconnected" when the target
 * disconnects, "connected" if it is still connected at the end. Exits 0
 * unless the connection could not be set up.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#define ISER_HDR_LEN	28
#define HDR_LEN		48
#define BUF_LEN		(ISER_HDR_LEN + HDR_LEN + 8192)
#define ISCSI_CTRL	0x10
#define ISER_ZBVA_NOT_SUP	0x80
#define ISER_SEND_W_INV_NOT_SUP	0x40

static struct rdma_event_channel *ch;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Next CM event within @ms milliseconds, or -1. */
static int next_event(int ms, enum rdma_cm_event_type *type)
{
	struct pollfd p = { .fd = ch->fd, .events = POLLIN };
	struct rdma_cm_event *ev;

	if (poll(&p, 1, ms) <= 0 || rdma_get_cm_event(ch, &ev))
		return -1;
	*type = ev->event;
	rdma_ack_cm_event(ev);
	return 0;
}

static int expect(enum rdma_cm_event_type want, const char *what)
{
	enum rdma_cm_event_type got;

	if (next_event(5000, &got) || got != want) {
		fprintf(stderr, "iser_peer: %s failed (%s)\n", what,
			got == want ? "timeout" : rdma_event_str(got));
		return -1;
	}
	return 0;
}

/* The iSCSI header of a first login request of a discovery session. */
static void login_hdr(uint8_t *bhs, uint32_t dlength)
{
	memset(bhs, 0, HDR_LEN);
	bhs[0] = 0x43;			/* immediate, login request */
	bhs[1] = 0x87;			/* transit, CSG 1, NSG 3 */
	bhs[5] = dlength >> 16;
	bhs[6] = dlength >> 8;
	bhs[7] = dlength;
	bhs[8] = 0x40;			/* ISID: random format */
	bhs[13] = 0x01;
}

static size_t build(const char *mode, uint8_t *b)
{
	uint8_t *bhs = b + ISER_HDR_LEN;

	memset(b, 0, ISER_HDR_LEN + HDR_LEN);
	b[0] = ISCSI_CTRL;
	if (!strcmp(mode, "short"))
		return 10;
	if (!strcmp(mode, "overlong")) {
		login_hdr(bhs, 4096);
		return ISER_HDR_LEN + HDR_LEN;
	}
	if (!strcmp(mode, "opcode")) {
		b[0] = 0x70;
		login_hdr(bhs, 0);
		return ISER_HDR_LEN + HDR_LEN;
	}
	if (!strcmp(mode, "scsi")) {
		bhs[0] = 0x01;		/* SCSI command */
		bhs[1] = 0xc0;		/* final, read */
		bhs[32] = 0x00;		/* TEST UNIT READY */
		return ISER_HDR_LEN + HDR_LEN;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ibv_qp_init_attr attr = { 0 };
	struct rdma_conn_param cp = { 0 };
	struct addrinfo *ai;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	uint8_t priv[4] = { ISER_ZBVA_NOT_SUP | ISER_SEND_W_INV_NOT_SUP };
	uint8_t *rx, *tx;
	size_t len;
	double end;
	int connected = 1;

	if (argc != 5) {
		fprintf(stderr, "usage: %s ADDR PORT MODE SECONDS\n", argv[0]);
		return 2;
	}
	rx = calloc(1, 2 * BUF_LEN);
	if (!rx)
		return 1;
	tx = rx + BUF_LEN;
	len = build(argv[3], tx);
	if (!len) {
		fprintf(stderr, "iser_peer: unknown mode %s\n", argv[3]);
		return 2;
	}
	if (getaddrinfo(argv[1], argv[2], NULL, &ai)) {
		fprintf(stderr, "iser_peer: bad address\n");
		return 1;
	}
	ch = rdma_create_event_channel();
	if (!ch || rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) ||
	    rdma_resolve_addr(id, NULL, ai->ai_addr, 2000) ||
	    expect(RDMA_CM_EVENT_ADDR_RESOLVED, "address resolution") ||
	    rdma_resolve_route(id, 2000) ||
	    expect(RDMA_CM_EVENT_ROUTE_RESOLVED, "route resolution"))
		return 1;

	pd = ibv_alloc_pd(id->verbs);
	cq = pd ? ibv_create_cq(id->verbs, 16, NULL, NULL, 0) : NULL;
	mr = cq ? ibv_reg_mr(pd, rx, 2 * BUF_LEN, IBV_ACCESS_LOCAL_WRITE) : NULL;
	if (!mr)
		return 1;
	attr.send_cq = cq;
	attr.recv_cq = cq;
	attr.qp_type = IBV_QPT_RC;
	attr.cap.max_send_wr = 4;
	attr.cap.max_recv_wr = 4;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, pd, &attr))
		return 1;

	struct ibv_sge rsge = { (uintptr_t)rx, BUF_LEN, mr->lkey };
	struct ibv_recv_wr rwr = { .wr_id = 1, .sg_list = &rsge, .num_sge = 1 }, *bad_r;

	if (ibv_post_recv(id->qp, &rwr, &bad_r))
		return 1;

	cp.private_data = priv;
	cp.private_data_len = sizeof(priv);
	cp.initiator_depth = 1;
	cp.responder_resources = 1;
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	if (rdma_connect(id, &cp) || expect(RDMA_CM_EVENT_ESTABLISHED, "connect"))
		return 1;

	struct ibv_sge ssge = { (uintptr_t)tx, len, mr->lkey };
	struct ibv_send_wr swr = { .wr_id = 2, .sg_list = &ssge, .num_sge = 1,
				   .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad_s;

	if (ibv_post_send(id->qp, &swr, &bad_s))
		return 1;

	end = now() + atoi(argv[4]);
	for (;;) {
		enum rdma_cm_event_type ev;
		struct ibv_wc wc;

		/* What arrived before a disconnect is still reported. */
		while (ibv_poll_cq(cq, 1, &wc) == 1) {
			if (wc.wr_id != 1 || wc.status != IBV_WC_SUCCESS)
				continue;
			printf("rx opcode 0x%02x class %u detail %u\n",
			       rx[ISER_HDR_LEN] & 0x3f, rx[ISER_HDR_LEN + 36],
			       rx[ISER_HDR_LEN + 37]);
			fflush(stdout);
			ibv_post_recv(id->qp, &rwr, &bad_r);
		}
		if (!connected || now() >= end)
			break;
		if (!next_event(100, &ev) && (ev == RDMA_CM_EVENT_DISCONNECTED ||
					      ev == RDMA_CM_EVENT_TIMEWAIT_EXIT))
			connected = 0;
	}
	printf("%s\n", connected ? "connected" : "disconnected");
	rdma_disconnect(id);
	rdma_destroy_qp(id);
	ibv_dereg_mr(mr);
	ibv_destroy_cq(cq);
	ibv_dealloc_pd(pd);
	rdma_destroy_id(id);
	rdma_destroy_event_channel(ch);
	return 0;
}
