#ifndef GATETOP_H
#define GATETOP_H

/*
 * gatetop(1): the live terminal dashboard of gatewayd. It only listens to the PUB stream
 * (model.c turns each message into a model) and sends actions over the control socket
 * (action.c). screen.c owns curses; the panel_*.c files draw one pane each from the model
 * (as htop's Panel.c does), and the same row text serves the --once snapshot.
 */

#include <stdio.h>

#define GATETOP_DEFAULT_PUB "ipc:///tmp/gatewayd.pub"
#define GATETOP_DEFAULT_CTL "ipc:///tmp/gatewayd.ctl"
#define GATETOP_STALE_S 3.0 /* no stats for this long: "disconnected" */

#define MODEL_MAX_BACKENDS 64
#define MODEL_MAX_KEYS 64
#define MODEL_MAX_DCS 32
#define MODEL_LOG_MAX 256
#define MODEL_HIST 64
#define MODEL_KEY_LINGER_S 10.0 /* a key quiet for this long leaves the keys pane */

/* A metric's recent samples, oldest first once read through model_hist_get(). */
struct model_hist {
	double v[MODEL_HIST];
	int len;
	int head; /* where the next sample goes */
};

struct model_backend {
	char id[64];
	char address[64];
	char dc[32];
	char circuit[16];
	char state[16];
	int healthy;
	int weight;
	long long active;
	long long max_conns;
	long long requests;
	long long failures;
	double avg_ms;
	double rps;
	double share;
	struct model_hist h_rps;
};

struct model_key {
	char identity[80];
	char prefix[48]; /* "" for users */
	char tier[32];
	long long user_id; /* -1 when none */
	double rps;
	long long requests;
	long long total;
	long long remaining;
	long long limit;
	int blocked;
	double seen; /* monotonic seconds it was last among the busiest */
};

struct model_dc {
	char name[32];
	int healthy;
	int backends;
	long long requests;
	double rps;
};

struct model_log {
	int is_event; /* an operator event: message only */
	char time[16];
	char method[12];
	char path[160];
	int status;
	char backend[32];
	char identity[80];
	char cache[8];
	char client_ip[48];
	char ratelimit[12];
	long long latency_us;
	long long bytes;
};

enum model_topic { MODEL_NONE = -1, MODEL_STATS, MODEL_LOG, MODEL_EVENT };

/* Fixed-size, without pointers, so that pausing is a plain struct copy. */
struct model {
	int have_stats;
	double last_stats; /* monotonic seconds of the last stats message */
	char strategy[32];
	double uptime;
	long long total_requests;
	double rps, p50, p99, error_rate, cache_hit_rate;
	long long queue_depth, queue_max, queue_rejected;
	long long rl_allowed, rl_rejected, rl_banned;
	long long log_lines, log_dropped;
	struct model_hist h_rps, h_p99, h_err, h_cache;
	int nbackends;
	struct model_backend backends[MODEL_MAX_BACKENDS];
	int nkeys;
	struct model_key keys[MODEL_MAX_KEYS];
	int ndcs;
	int dcs_derived; /* the stream had no "datacenters": grouped from the backends */
	struct model_dc dcs[MODEL_MAX_DCS];
	int nlog;
	int log_head;
	struct model_log log[MODEL_LOG_MAX];
	long long messages;
};

/* model.c */
void model_init(struct model *m);
/* Applies one PUB message ("TOPIC JSON") received at monotonic time now; its topic. */
enum model_topic model_apply(struct model *m, const char *msg, size_t len, double now);
/* The i-th most recent stream line (0 is the newest), or NULL. */
const struct model_log *model_log_at(const struct model *m, int i);
int model_connected(const struct model *m, double now);
void model_hist_push(struct model_hist *h, double v);
/* Sample i of h, 0 the oldest. */
double model_hist_get(const struct model_hist *h, int i);
/* Monotonic seconds. */
double model_now(void);

/* spark.c */
/*
 * Renders the last width samples of h into out as a sparkline (Unicode blocks when utf8,
 * else ASCII), scaled to the largest of them; the number of cells written.
 */
int spark_render(const struct model_hist *h, int width, int utf8, char *out, size_t outlen);

/* The panes, in tab order. */
enum ui_pane { UI_BACKENDS, UI_KEYS, UI_DCS, UI_STREAM, UI_NPANES };

struct ui {
	int focus;
	int sel[UI_NPANES]; /* selected row of each pane */
	int top[UI_NPANES]; /* first row shown (scrolling) */
	char sel_key[80];   /* the selected key's identity: rows move every second */
	char filter[64];
	int paused;
	int help;
	int utf8;
	char status[256];
	int status_error;
};

/* Row colour classes, mapped to curses attributes by panel.c. */
enum panel_class { PANEL_NORMAL, PANEL_GOOD, PANEL_WARN, PANEL_BAD, PANEL_DIM };

/* A list pane: a column header and rows, drawn in a box or printed as text. */
struct panel {
	const char *title;
	const char *header;
	int (*rows)(const struct model *m, const struct ui *ui);
	/* Row i as text; its colour class, and an optional sparkline to draw after it. */
	enum panel_class (*row)(const struct model *m, const struct ui *ui, int i, char *buf,
	                        size_t len, const struct model_hist **spark);
};

extern const struct panel panel_backends;
extern const struct panel panel_keys;
extern const struct panel panel_dc;
extern const struct panel panel_stream;

/* panel_keys.c */
/* Row index of identity among the filtered keys, or -1. */
int panel_keys_find(const struct model *m, const struct ui *ui, const char *identity);
/* The i-th filtered key, or NULL. */
const struct model_key *panel_keys_at(const struct model *m, const struct ui *ui, int i);

/* panel_header.c */
#define PANEL_HEADER_LINES 3
/* Line n (0..PANEL_HEADER_LINES-1) of the header, without sparklines. */
void panel_header_line(const struct model *m, const struct ui *ui, double now, int n, char *buf,
                       size_t len);

/* panel.c (curses drawing lives in screen.c; this is the text side) */
void panel_print(FILE *f, const struct panel *p, const struct model *m, const struct ui *ui);
void panel_print_all(FILE *f, const struct model *m, const struct ui *ui, double now);
/* Whether s contains the filter (empty filter: everything). */
int panel_match(const struct ui *ui, const char *s);

/* screen.c */
int screen_init(void);
void screen_end(void);
/* Re-reads the terminal size after KEY_RESIZE. */
void screen_resize(void);
void screen_draw(const struct model *m, struct ui *ui, double now);
/* A key, or -1 after timeout_ms without one. */
int screen_getch(int timeout_ms);
/* Reads a line at the bottom (Enter accepts); 0, or -1 when cancelled with Esc. */
int screen_prompt(const char *question, char *out, size_t outlen);
/* Rows the focused pane showed at the last draw (for page moves). */
int screen_pane_rows(int pane);

/* action.c */
/*
 * Sends cmd with args to the control socket at url; the result in msg for the status line.
 * 0 done, -1 refused or unreachable.
 */
int action_send(const char *url, const char *cmd, int argc, char *argv[], char *msg, size_t msglen);

#endif
