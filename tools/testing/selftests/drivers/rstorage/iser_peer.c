// SPDX-License-Identifier: GPL-2.0
/*
 * iser_peer: a minimal iSER initiator that connects to a target portal over
 * RDMA and sends what the kernel's initiator never sends, to see how the
 * target copes.
 *
 * Usage: iser_peer ADDR PORT MODE SECONDS
 *        iser_peer ADDR PORT fuzz COUNT TARGET_IQN [SEED]
 *        iser_peer ADDR PORT abort LUN TARGET_IQN
 *        iser_peer ADDR PORT vanish SECONDS TARGET_IQN
 *
 * MODE (one crafted message before any login):
 *   short     a 10-byte message (shorter than the iSER and iSCSI headers)
 *   overlong  a login request whose header declares 4096 data bytes, sent
 *             without them
 *   opcode    a message with an unknown iSER opcode
 *   scsi      a SCSI command as the first PDU, before any login (out of
 *             order)
 * It then waits up to SECONDS for the target's answer and prints one line
 * per event: "rx opcode 0xNN class N detail N" for each PDU received (class
 * and detail are the login status fields), "disconnected" when the target
 * disconnects, "connected" if it is still connected at the end.
 *
 * fuzz: logs in to TARGET_IQN (a normal session, no data commands), then
 * sends COUNT PDUs built from valid ones (NOP-Out, TEST UNIT READY and other
 * data-less SCSI commands, text, ABORT TASK, Data-Out, SNACK, reserved
 * opcodes) with random bytes of their headers changed, and now and then a
 * broken iSER header or a length that does not match. When the target drops
 * the connection it connects and logs in again. It answers the target's
 * NOP-In pings. At the end it logs out and prints one line of counts:
 * "sent N connects N rx N reject N nop_in N scsi_rsp N tmf_rsp N text_rsp N
 * logout_rsp N other N".
 *
 * abort: logs in to TARGET_IQN, sends TEST UNIT READY to LUN (which takes a
 * pending unit attention), then a SCSI WRITE of one 512-byte block to LUN
 * (its data fetched by the target with an RDMA READ from the peer's memory),
 * waits a second, prints "scsi responses before the abort: N (last: response
 * R status S)", sends ABORT TASK for the WRITE and waits up to 30 s for the
 * task management response; prints "tmf response N" (0: function complete)
 * or "no tmf response", then logs out.
 *
 * vanish: logs in to TARGET_IQN, sends TEST UNIT READY to LUN 0, prints
 * "logged in" and then does nothing at all for SECONDS: it neither polls its
 * queues nor answers pings, and never disconnects. The test takes its
 * network away meanwhile, so that to the target it is an initiator that
 * vanished; it is killed at the end.
 *
 * Exits 0 unless a connection could not be set up (or, in fuzz mode, a
 * login failed three times in a row).
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

/* Receive buffers and send slots of a fuzzing connection. */
#define NRX		64
#define NTX		32
#define TX_LEN		(ISER_HDR_LEN + HDR_LEN + 1024)

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

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void put_dlength(uint8_t *bhs, uint32_t dlength)
{
	bhs[5] = dlength >> 16;
	bhs[6] = dlength >> 8;
	bhs[7] = dlength;
}

/* The iSCSI header of a first login request (operational stage to full feature). */
static void login_hdr(uint8_t *bhs, uint32_t dlength)
{
	memset(bhs, 0, HDR_LEN);
	bhs[0] = 0x43;			/* immediate, login request */
	bhs[1] = 0x87;			/* transit, CSG 1, NSG 3 */
	put_dlength(bhs, dlength);
	bhs[8] = 0x40;			/* ISID: random format */
	bhs[13] = 0x01;
}

/* An RDMA connection to the portal, with its buffers. */
struct peer {
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	uint8_t *mem;		/* nrx receive buffers, then ntx send buffers */
	int nrx, ntx;
	int tx_posted;		/* sends not yet completed */
	int up;
};

static uint8_t *rx_buf(struct peer *p, int i)
{
	return p->mem + (size_t)i * BUF_LEN;
}

static uint8_t *tx_buf(struct peer *p, int i)
{
	return p->mem + (size_t)p->nrx * BUF_LEN + (size_t)i * TX_LEN;
}

static int post_rx(struct peer *p, int i)
{
	struct ibv_sge sge = { (uintptr_t)rx_buf(p, i), BUF_LEN, p->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = i, .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(p->id->qp, &wr, &bad);
}

static int post_tx(struct peer *p, int i, size_t len)
{
	struct ibv_sge sge = { (uintptr_t)tx_buf(p, i), len, p->mr->lkey };
	struct ibv_send_wr wr = { .wr_id = 0x10000 + i, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;

	if (ibv_post_send(p->id->qp, &wr, &bad))
		return -1;
	p->tx_posted++;
	return 0;
}

static void peer_close(struct peer *p)
{
	if (!p->id)
		return;
	rdma_disconnect(p->id);
	rdma_destroy_qp(p->id);
	ibv_dereg_mr(p->mr);
	ibv_destroy_cq(p->cq);
	ibv_dealloc_pd(p->pd);
	rdma_destroy_id(p->id);
	free(p->mem);
	memset(p, 0, sizeof(*p));
}

/* Connects to @ai with @nrx receive buffers posted and room for @ntx sends. */
static int peer_connect(struct peer *p, struct addrinfo *ai, int nrx, int ntx)
{
	struct ibv_qp_init_attr attr = { 0 };
	struct rdma_conn_param cp = { 0 };
	uint8_t priv[4] = { ISER_ZBVA_NOT_SUP | ISER_SEND_W_INV_NOT_SUP };
	size_t size = (size_t)nrx * BUF_LEN + (size_t)ntx * TX_LEN;
	int i;

	memset(p, 0, sizeof(*p));
	p->nrx = nrx;
	p->ntx = ntx;
	p->mem = calloc(1, size);
	if (!p->mem || rdma_create_id(ch, &p->id, NULL, RDMA_PS_TCP) ||
	    rdma_resolve_addr(p->id, NULL, ai->ai_addr, 2000) ||
	    expect(RDMA_CM_EVENT_ADDR_RESOLVED, "address resolution") ||
	    rdma_resolve_route(p->id, 2000) ||
	    expect(RDMA_CM_EVENT_ROUTE_RESOLVED, "route resolution"))
		return -1;
	p->pd = ibv_alloc_pd(p->id->verbs);
	p->cq = p->pd ? ibv_create_cq(p->id->verbs, nrx + ntx + 8, NULL, NULL, 0) : NULL;
	/* Remote read: the target fetches a WRITE's data from here (abort mode). */
	p->mr = p->cq ? ibv_reg_mr(p->pd, p->mem, size,
				   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ) : NULL;
	if (!p->mr)
		return -1;
	attr.send_cq = p->cq;
	attr.recv_cq = p->cq;
	attr.qp_type = IBV_QPT_RC;
	attr.cap.max_send_wr = ntx;
	attr.cap.max_recv_wr = nrx;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	if (rdma_create_qp(p->id, p->pd, &attr))
		return -1;
	for (i = 0; i < nrx; i++)
		if (post_rx(p, i))
			return -1;
	cp.private_data = priv;
	cp.private_data_len = sizeof(priv);
	cp.initiator_depth = 1;
	cp.responder_resources = 1;
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	if (rdma_connect(p->id, &cp) || expect(RDMA_CM_EVENT_ESTABLISHED, "connect"))
		return -1;
	p->up = 1;
	return 0;
}

/* Whether the target disconnected (a CM event within @ms milliseconds). */
static int disconnected(int ms)
{
	enum rdma_cm_event_type ev;

	return !next_event(ms, &ev) && (ev == RDMA_CM_EVENT_DISCONNECTED ||
					 ev == RDMA_CM_EVENT_TIMEWAIT_EXIT);
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

/* One crafted message, then what the target answers. */
static int one_message(struct addrinfo *ai, const char *mode, int seconds)
{
	struct peer p;
	size_t len;
	double end;

	if (peer_connect(&p, ai, 1, 1))
		return 1;
	len = build(mode, tx_buf(&p, 0));
	if (!len) {
		fprintf(stderr, "iser_peer: unknown mode %s\n", mode);
		return 2;
	}
	if (post_tx(&p, 0, len))
		return 1;
	end = now() + seconds;
	for (;;) {
		struct ibv_wc wc;

		/* What arrived before a disconnect is still reported. */
		while (ibv_poll_cq(p.cq, 1, &wc) == 1) {
			uint8_t *rx = rx_buf(&p, 0);

			if (wc.wr_id != 0 || wc.status != IBV_WC_SUCCESS)
				continue;
			printf("rx opcode 0x%02x class %u detail %u\n",
			       rx[ISER_HDR_LEN] & 0x3f, rx[ISER_HDR_LEN + 36],
			       rx[ISER_HDR_LEN + 37]);
			fflush(stdout);
			post_rx(&p, 0);
		}
		if (!p.up || now() >= end)
			break;
		if (disconnected(100))
			p.up = 0;
	}
	printf("%s\n", p.up ? "connected" : "disconnected");
	peer_close(&p);
	return 0;
}

/* Fuzzing state of the session. */
struct session {
	struct peer p;
	const char *iqn;
	uint32_t cmdsn, expstatsn, itt;
	uint16_t tsih;
	int next_tx;
	unsigned long sent, connects, rx, reject, nop_in, scsi_rsp, tmf_rsp, text_rsp,
		logout_rsp, other;
	unsigned int last_status;	/* of the last SCSI response: response << 8 | status */
};

/* Waits for a send slot: reaps send completions. Returns -1 if the connection broke. */
static int tx_slot(struct session *s)
{
	struct peer *p = &s->p;
	int i = s->next_tx;

	while (p->tx_posted >= p->ntx) {
		struct ibv_wc wc;
		int n = ibv_poll_cq(p->cq, 1, &wc);

		if (n < 0)
			return -1;
		if (n == 0) {
			if (disconnected(1))
				return -1;
			continue;
		}
		if (wc.wr_id >= 0x10000)
			p->tx_posted--;
		else if (wc.status == IBV_WC_SUCCESS)
			post_rx(p, wc.wr_id);
		if (wc.status != IBV_WC_SUCCESS)
			return -1;
	}
	s->next_tx = (i + 1) % p->ntx;
	return i;
}

/* Sends the iSER control header and the first @len bytes after it in slot @i. */
static int send_pdu(struct session *s, int i, size_t len)
{
	return post_tx(&s->p, i, ISER_HDR_LEN + len);
}

/* Handles one received PDU. */
static void on_rx(struct session *s, const uint8_t *rx)
{
	const uint8_t *bhs = rx + ISER_HDR_LEN;
	uint8_t op = bhs[0] & 0x3f;

	s->rx++;
	/* Every response PDU carries StatSN, ExpCmdSN and MaxCmdSN at the same places. */
	if (op != 0x25 && op != 0x31) {
		if (get32(bhs + 24) + 1 > s->expstatsn)
			s->expstatsn = get32(bhs + 24) + 1;
		/* ExpCmdSN: never back, commands sent since may not be counted in it yet. */
		if ((int32_t)(get32(bhs + 28) - s->cmdsn) > 0)
			s->cmdsn = get32(bhs + 28);
	}
	switch (op) {
	case 0x3f:
		s->reject++;
		break;
	case 0x20:
		s->nop_in++;
		/* A ping from the target (a target transfer tag): answer it. */
		if (get32(bhs + 20) != 0xffffffff) {
			int i = tx_slot(s);
			uint8_t *b;

			if (i < 0)
				return;
			b = tx_buf(&s->p, i);
			memset(b, 0, ISER_HDR_LEN + HDR_LEN);
			b[0] = ISCSI_CTRL;
			b[ISER_HDR_LEN] = 0x40;
			b[ISER_HDR_LEN + 1] = 0x80;
			memcpy(b + ISER_HDR_LEN + 8, bhs + 8, 8);
			put32(b + ISER_HDR_LEN + 16, 0xffffffff);
			memcpy(b + ISER_HDR_LEN + 20, bhs + 20, 4);
			put32(b + ISER_HDR_LEN + 24, s->cmdsn);
			put32(b + ISER_HDR_LEN + 28, s->expstatsn);
			send_pdu(s, i, HDR_LEN);
		}
		break;
	case 0x21:
		s->scsi_rsp++;
		s->last_status = bhs[2] << 8 | bhs[3];
		break;
	case 0x22:
		s->tmf_rsp++;
		break;
	case 0x24:
		s->text_rsp++;
		break;
	case 0x26:
		s->logout_rsp++;
		break;
	default:
		s->other++;
	}
}

/* Takes what completed; returns -1 when the connection broke. */
static int reap(struct session *s, int ms)
{
	struct peer *p = &s->p;
	double end = now() + ms / 1000.0;

	do {
		struct ibv_wc wc;
		int n;

		while ((n = ibv_poll_cq(p->cq, 1, &wc)) == 1) {
			if (wc.status != IBV_WC_SUCCESS)
				return -1;
			if (wc.wr_id >= 0x10000) {
				p->tx_posted--;
				continue;
			}
			on_rx(s, rx_buf(p, wc.wr_id));
			if (post_rx(p, wc.wr_id))
				return -1;
		}
		if (n < 0 || disconnected(0))
			return -1;
	} while (now() < end);
	return 0;
}

static size_t text_data(uint8_t *d, const char *iqn)
{
	/* The login keys, each followed by a NUL; @iqn follows TargetName=. */
	static const char * const keys[] = {
		"InitiatorName=iqn.2026-11.org.rstorage:peer",
		"SessionType=Normal",
		"TargetName=",
		"HeaderDigest=None",
		"DataDigest=None",
		"RDMAExtensions=Yes",
		"InitialR2T=Yes",
		"ImmediateData=Yes",
		"MaxBurstLength=262144",
		"FirstBurstLength=65536",
		"MaxOutstandingR2T=1",
		"ErrorRecoveryLevel=0",
		"DefaultTime2Wait=2",
		"DefaultTime2Retain=0",
		"TargetRecvDataSegmentLength=8192",
		"InitiatorRecvDataSegmentLength=8192",
		"MaxOutstandingUnexpectedPDUs=0",
		NULL
	};
	const char * const *k;
	size_t len = 0;

	for (k = keys; *k; k++)
		len += sprintf((char *)d + len, "%s%s%c", *k,
			       strcmp(*k, "TargetName=") ? "" : iqn, 0);
	return len;
}

/* Connects and logs in, straight to the full-feature phase. */
static int session_login(struct session *s, struct addrinfo *ai)
{
	int round;

	if (peer_connect(&s->p, ai, NRX, NTX))
		return -1;
	s->connects++;
	s->tsih = 0;
	s->cmdsn = 1;
	s->expstatsn = 0;
	for (round = 0; round < 4; round++) {
		uint8_t *b = tx_buf(&s->p, 0), *bhs = b + ISER_HDR_LEN;
		size_t dlen = round ? 0 : text_data(bhs + HDR_LEN, s->iqn);
		double end = now() + 10;
		struct ibv_wc wc;

		b[0] = ISCSI_CTRL;
		memset(b + 1, 0, ISER_HDR_LEN - 1);
		login_hdr(bhs, dlen);
		bhs[13] = s->connects & 0xff;
		bhs[14] = s->tsih >> 8;
		bhs[15] = s->tsih;
		put32(bhs + 16, s->itt);
		put32(bhs + 24, s->cmdsn);
		put32(bhs + 28, s->expstatsn);
		if (post_tx(&s->p, 0, ISER_HDR_LEN + HDR_LEN + ((dlen + 3) & ~3u)))
			return -1;
		for (;;) {
			int n = ibv_poll_cq(s->p.cq, 1, &wc);

			if (n < 0 || (n == 0 && now() > end))
				return -1;
			if (n == 0)
				continue;
			if (wc.status != IBV_WC_SUCCESS)
				return -1;
			if (wc.wr_id >= 0x10000) {
				s->p.tx_posted--;
				continue;
			}
			break;
		}
		bhs = rx_buf(&s->p, wc.wr_id) + ISER_HDR_LEN;
		if ((bhs[0] & 0x3f) != 0x23 || bhs[36] != 0) {
			fprintf(stderr,
				"iser_peer: login refused: opcode 0x%02x class %u detail %u\n",
				bhs[0] & 0x3f, bhs[36], bhs[37]);
			return -1;
		}
		s->tsih = bhs[14] << 8 | bhs[15];
		s->expstatsn = get32(bhs + 24) + 1;
		s->cmdsn = get32(bhs + 28);
		post_rx(&s->p, wc.wr_id);
		if ((bhs[1] & 0x80) && (bhs[1] & 0x03) == 3)
			return 0;
	}
	return -1;
}

/* Builds one valid PDU of a random kind in @bhs (with its data after it); returns its length. */
static size_t fuzz_template(struct session *s, uint8_t *bhs)
{
	uint8_t *data = bhs + HDR_LEN;
	uint32_t dlen = 0;

	memset(bhs, 0, HDR_LEN);
	put32(bhs + 16, ++s->itt);
	put32(bhs + 24, s->cmdsn);
	put32(bhs + 28, s->expstatsn);
	switch (rand() % 8) {
	case 0:			/* NOP-Out ping with data */
		bhs[0] = 0x40;
		bhs[1] = 0x80;
		put32(bhs + 20, 0xffffffff);
		dlen = rand() % 65;
		memset(data, 0x5a, dlen);
		break;
	case 1:			/* TEST UNIT READY (SCSI commands are never immediate) */
		bhs[0] = 0x01;
		bhs[1] = 0x80;
		put32(bhs + 24, s->cmdsn++);
		break;
	case 2:			/* a data-less SCSI command with a random CDB */
		bhs[0] = 0x01;
		bhs[1] = 0x80;
		put32(bhs + 24, s->cmdsn++);
		bhs[32] = rand();
		bhs[33] = rand();
		break;
	case 3:			/* text: SendTargets */
		bhs[0] = 0x44;
		bhs[1] = 0x80;
		put32(bhs + 20, 0xffffffff);
		dlen = sprintf((char *)data, "SendTargets=All") + 1;
		break;
	case 4:			/* ABORT TASK of a task that may not exist */
		bhs[0] = 0x42;
		bhs[1] = 0x81;
		put32(bhs + 20, s->itt - 1 - rand() % 4);
		put32(bhs + 32, s->cmdsn);
		break;
	case 5:			/* unsolicited Data-Out for an unknown task */
		bhs[0] = 0x05;
		bhs[1] = 0x80;
		put32(bhs + 20, 0xffffffff);
		dlen = 512;
		memset(data, 0xa5, dlen);
		break;
	case 6:			/* SNACK (needs error recovery level 1) */
		bhs[0] = 0x10;
		bhs[1] = 0x80;
		break;
	default:		/* an opcode no initiator may send */
		bhs[0] = 0x40 | (0x0d + rand() % 3);
		bhs[1] = 0x80;
		break;
	}
	put_dlength(bhs, dlen);
	return HDR_LEN + ((dlen + 3) & ~3u);
}

/* Changes random header bytes; rarely, the iSER header or the lengths. */
static size_t fuzz_mutate(uint8_t *b, size_t len)
{
	uint8_t *bhs = b + ISER_HDR_LEN;
	int k, r = rand() % 1024;

	if (r < 4) {
		b[0] = rand();			/* iSER flags and opcode */
	} else if (r < 8) {
		bhs[5] = rand();		/* data segment length */
		bhs[6] = rand();
	} else if (r < 10) {
		return ISER_HDR_LEN + rand() % (len - ISER_HDR_LEN);	/* truncated */
	} else if (r < 512) {
		/* Bytes 4-7 (lengths) and 0 (opcode) stay: the kind of PDU is kept. */
		for (k = 1 + rand() % 3; k > 0; k--) {
			int at = 1 + rand() % (HDR_LEN - 1);

			if (at >= 4 && at <= 7)
				continue;
			bhs[at] = rand();
		}
	}
	return len;
}

/* Logout: closes the session, then takes what is left. */
static void session_logout(struct session *s)
{
	int i = tx_slot(s);
	uint8_t *b, *bhs;

	if (i < 0)
		return;
	b = tx_buf(&s->p, i);
	bhs = b + ISER_HDR_LEN;
	memset(b, 0, ISER_HDR_LEN + HDR_LEN);
	b[0] = ISCSI_CTRL;
	bhs[0] = 0x46;
	bhs[1] = 0x80;
	put32(bhs + 16, ++s->itt);
	put32(bhs + 24, s->cmdsn);
	put32(bhs + 28, s->expstatsn);
	if (!send_pdu(s, i, HDR_LEN))
		reap(s, 2000);
}

/*
 * Keeps a changed PDU from touching what another session uses: no data
 * phase (no direction, no expected length), no reservation, formatting or
 * sanitizing command, and no task management function but ABORT TASK (a LUN
 * or target reset would abort the other session's commands). A SCSI command
 * keeps its CmdSN (@cmdsn): the target holds a command numbered ahead of the
 * window's start until the commands before it arrive, and a session whose
 * initiator never sends them cannot close (its commands are waited for).
 */
static void fuzz_keep_safe(uint8_t *bhs, uint32_t cmdsn)
{
	switch (bhs[0] & 0x3f) {
	case 0x01:
		bhs[1] &= ~0x60;
		put32(bhs + 20, 0);
		put32(bhs + 24, cmdsn);
		switch (bhs[32]) {
		case 0x04: case 0x16: case 0x17: case 0x48: case 0x56: case 0x57:
		case 0x5e: case 0x5f:
			bhs[32] = 0;
		}
		break;
	case 0x02:
		bhs[1] = 0x81;
		break;
	}
}

static int fuzz(struct addrinfo *ai, unsigned long count, const char *iqn)
{
	struct session s = { .iqn = iqn };
	int fails = 0;

	while (s.sent < count) {
		uint32_t cmdsn;
		uint8_t *b;
		size_t len;
		int i;

		if (!s.p.up) {
			peer_close(&s.p);
			if (session_login(&s, ai)) {
				peer_close(&s.p);
				if (++fails == 3) {
					fprintf(stderr,
						"iser_peer: three logins failed in a row\n");
					return 1;
				}
				sleep(1);
				continue;
			}
			fails = 0;
		}
		i = tx_slot(&s);
		if (i < 0) {
			s.p.up = 0;
			continue;
		}
		b = tx_buf(&s.p, i);
		memset(b, 0, ISER_HDR_LEN);
		b[0] = ISCSI_CTRL;
		len = ISER_HDR_LEN + fuzz_template(&s, b + ISER_HDR_LEN);
		cmdsn = get32(b + ISER_HDR_LEN + 24);
		len = fuzz_mutate(b, len);
		fuzz_keep_safe(b + ISER_HDR_LEN, cmdsn);
		if (send_pdu(&s, i, len - ISER_HDR_LEN)) {
			s.p.up = 0;
			continue;
		}
		s.sent++;
		if (s.sent % 16 == 0 && reap(&s, 2))
			s.p.up = 0;
	}
	if (s.p.up && !reap(&s, 200))
		session_logout(&s);
	peer_close(&s.p);
	printf("sent %lu connects %lu rx %lu reject %lu nop_in %lu scsi_rsp %lu tmf_rsp %lu ",
	       s.sent, s.connects, s.rx, s.reject, s.nop_in, s.scsi_rsp, s.tmf_rsp);
	printf("text_rsp %lu logout_rsp %lu other %lu\n", s.text_rsp, s.logout_rsp, s.other);
	return 0;
}

/* Puts a SCSI command header for @lun with @cdb (10 bytes) into @bhs. */
static void scsi_hdr(struct session *s, uint8_t *bhs, unsigned int lun, const uint8_t *cdb,
		     uint32_t edtl, uint8_t flags)
{
	memset(bhs, 0, HDR_LEN);
	bhs[0] = 0x01;
	bhs[1] = flags;
	bhs[9] = lun;			/* peripheral addressing */
	put32(bhs + 16, ++s->itt);
	put32(bhs + 20, edtl);
	put32(bhs + 24, s->cmdsn);
	put32(bhs + 28, s->expstatsn);
	memcpy(bhs + 32, cdb, 10);
}

/* Sends TEST UNIT READY to @lun and reaps for a second; 0 on success. */
static int send_tur(struct session *s, unsigned int lun)
{
	static const uint8_t tur[10];
	uint8_t *b;
	int i;

	i = tx_slot(s);
	b = tx_buf(&s->p, i);
	memset(b, 0, ISER_HDR_LEN);
	b[0] = ISCSI_CTRL;
	scsi_hdr(s, b + ISER_HDR_LEN, lun, tur, 0, 0x81);	/* final, simple */
	s->cmdsn++;
	return send_pdu(s, i, HDR_LEN) || reap(s, 1000);
}

static int abort_task(struct addrinfo *ai, unsigned int lun, const char *iqn)
{
	static const uint8_t write10[10] = { 0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	struct session s = { .iqn = iqn };
	uint32_t ref_itt, ref_cmdsn;
	uint8_t *b, *bhs, *data;
	double end;
	int i, rsp = -1;

	if (session_login(&s, ai))
		return 1;
	/* TEST UNIT READY takes the unit attention a newly mapped LUN reports first. */
	if (send_tur(&s, lun))
		return 1;
	s.scsi_rsp = 0;
	/* The WRITE: its data is the last send buffer, which the target reads by RDMA. */
	data = tx_buf(&s.p, s.p.ntx - 1);
	memset(data, 0x6b, 512);
	i = tx_slot(&s);
	b = tx_buf(&s.p, i);
	memset(b, 0, ISER_HDR_LEN);
	b[0] = ISCSI_CTRL | 0x08;	/* write STag valid */
	put32(b + 4, s.p.mr->rkey);
	put32(b + 8, (uint64_t)(uintptr_t)data >> 32);
	put32(b + 12, (uintptr_t)data);
	scsi_hdr(&s, b + ISER_HDR_LEN, lun, write10, 512, 0xa1);	/* final, write, simple */
	ref_itt = s.itt;
	ref_cmdsn = s.cmdsn;
	s.cmdsn++;
	if (send_pdu(&s, i, HDR_LEN) || reap(&s, 1000))
		return 1;
	/* A SCSI response before the abort means the backend did not hold the WRITE. */
	printf("scsi responses before the abort: %lu (last: response %u status 0x%02x)\n",
	       s.scsi_rsp, s.last_status >> 8, s.last_status & 0xff);
	/* ABORT TASK, immediate. */
	i = tx_slot(&s);
	b = tx_buf(&s.p, i);
	bhs = b + ISER_HDR_LEN;
	memset(b, 0, ISER_HDR_LEN + HDR_LEN);
	b[0] = ISCSI_CTRL;
	bhs[0] = 0x42;
	bhs[1] = 0x81;
	bhs[9] = lun;
	put32(bhs + 16, ++s.itt);
	put32(bhs + 20, ref_itt);
	put32(bhs + 24, s.cmdsn);
	put32(bhs + 28, s.expstatsn);
	put32(bhs + 32, ref_cmdsn);
	if (send_pdu(&s, i, HDR_LEN))
		return 1;
	end = now() + 30;
	while (rsp < 0 && now() < end) {
		struct ibv_wc wc;
		int n = ibv_poll_cq(s.p.cq, 1, &wc);

		if (n < 0 || (n == 1 && wc.status != IBV_WC_SUCCESS))
			break;
		if (n == 0) {
			usleep(1000);
			continue;
		}
		if (wc.wr_id >= 0x10000) {
			s.p.tx_posted--;
			continue;
		}
		bhs = rx_buf(&s.p, wc.wr_id) + ISER_HDR_LEN;
		if ((bhs[0] & 0x3f) == 0x22 && get32(bhs + 16) == s.itt)
			rsp = bhs[2];
		on_rx(&s, rx_buf(&s.p, wc.wr_id));
		post_rx(&s.p, wc.wr_id);
	}
	if (rsp < 0)
		printf("no tmf response\n");
	else
		printf("tmf response %d\n", rsp);
	fflush(stdout);
	session_logout(&s);
	peer_close(&s.p);
	return 0;
}

static int vanish(struct addrinfo *ai, unsigned int seconds, const char *iqn)
{
	struct session s = { .iqn = iqn };

	if (session_login(&s, ai) || send_tur(&s, 0))
		return 1;
	printf("logged in\n");
	fflush(stdout);
	sleep(seconds);
	return 0;
}

int main(int argc, char **argv)
{
	struct addrinfo *ai;

	if (argc < 5 || ((!strcmp(argv[3], "fuzz") || !strcmp(argv[3], "abort") ||
			  !strcmp(argv[3], "vanish")) && argc < 6)) {
		fprintf(stderr, "usage: %s ADDR PORT MODE SECONDS\n"
			"       %s ADDR PORT fuzz COUNT TARGET_IQN [SEED]\n"
			"       %s ADDR PORT abort LUN TARGET_IQN\n"
			"       %s ADDR PORT vanish SECONDS TARGET_IQN\n",
			argv[0], argv[0], argv[0], argv[0]);
		return 2;
	}
	if (getaddrinfo(argv[1], argv[2], NULL, &ai)) {
		fprintf(stderr, "iser_peer: bad address\n");
		return 1;
	}
	ch = rdma_create_event_channel();
	if (!ch)
		return 1;
	if (!strcmp(argv[3], "fuzz")) {
		srand(argc > 6 ? atoi(argv[6]) : 1);
		return fuzz(ai, strtoul(argv[4], NULL, 0), argv[5]);
	}
	if (!strcmp(argv[3], "abort"))
		return abort_task(ai, atoi(argv[4]), argv[5]);
	if (!strcmp(argv[3], "vanish"))
		return vanish(ai, atoi(argv[4]), argv[5]);
	return one_message(ai, argv[3], atoi(argv[4]));
}
