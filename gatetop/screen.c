#include <curses.h>
#include <string.h>

#include "gatetop.h"

/*
 * The screen owns curses. Every frame is drawn into stdscr (and the help overlay into its
 * own window) and sent with wnoutrefresh()+doupdate(): curses then writes only the cells
 * that changed, so a redraw every second never blanks the terminal (no flicker). The
 * layout is recomputed on every frame from LINES and COLS, so a resize is just a redraw;
 * panes are dropped, least useful first, when the terminal gets small.
 */

#define SCREEN_MIN_LINES 6
#define SCREEN_MIN_COLS 30
#define SCREEN_DC_WIDTH 38
#define SCREEN_SPARK_WIDTH 16
#define SCREEN_PROMPT_ROOM 24 /* columns a prompt keeps for the answer */

enum screen_color { SCREEN_C_GOOD = 1, SCREEN_C_WARN, SCREEN_C_BAD, SCREEN_C_TITLE };

struct screen_rect {
	int y, x, h, w; /* h == 0: the pane is hidden */
};

static const struct panel *const screen_panels[UI_NPANES] = {&panel_backends, &panel_keys,
                                                             &panel_dc, &panel_stream};
static int screen_colors;
static int screen_shown[UI_NPANES]; /* rows each pane showed at the last draw */

int
screen_init(void)
{
	if (initscr() == NULL)
		return -1;
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	curs_set(0);
	set_escdelay(25);
	if (has_colors() && start_color() == OK) {
		use_default_colors();
		init_pair(SCREEN_C_GOOD, COLOR_GREEN, -1);
		init_pair(SCREEN_C_WARN, COLOR_YELLOW, -1);
		init_pair(SCREEN_C_BAD, COLOR_RED, -1);
		init_pair(SCREEN_C_TITLE, COLOR_CYAN, -1);
		screen_colors = 1;
	}
	return 0;
}

void
screen_end(void)
{
	endwin();
}

void
screen_resize(void)
{
	/* ncurses has updated LINES/COLS already; forget what was on the old screen */
	clearok(curscr, TRUE);
}

int
screen_getch(int timeout_ms)
{
	timeout(timeout_ms);
	return getch();
}

int
screen_pane_rows(int pane)
{
	return pane >= 0 && pane < UI_NPANES && screen_shown[pane] > 0 ? screen_shown[pane] : 1;
}

static attr_t
screen_attr(enum panel_class c)
{
	static const short pairs[] = {
	    [PANEL_GOOD] = SCREEN_C_GOOD, [PANEL_WARN] = SCREEN_C_WARN, [PANEL_BAD] = SCREEN_C_BAD};

	if (c == PANEL_DIM)
		return A_DIM;
	if (!screen_colors || c == PANEL_NORMAL)
		return A_NORMAL;
	return COLOR_PAIR(pairs[c]) | (c == PANEL_BAD ? A_BOLD : A_NORMAL);
}

static void
screen_box(const struct screen_rect *r, const char *title, int count, int focused)
{
	char t[96];
	attr_t a =
	    focused ? A_BOLD | (screen_colors ? COLOR_PAIR(SCREEN_C_TITLE) : A_NORMAL) : A_NORMAL;

	attron(a);
	mvhline(r->y, r->x + 1, ACS_HLINE, r->w - 2);
	mvhline(r->y + r->h - 1, r->x + 1, ACS_HLINE, r->w - 2);
	mvvline(r->y + 1, r->x, ACS_VLINE, r->h - 2);
	mvvline(r->y + 1, r->x + r->w - 1, ACS_VLINE, r->h - 2);
	mvaddch(r->y, r->x, ACS_ULCORNER);
	mvaddch(r->y, r->x + r->w - 1, ACS_URCORNER);
	mvaddch(r->y + r->h - 1, r->x, ACS_LLCORNER);
	mvaddch(r->y + r->h - 1, r->x + r->w - 1, ACS_LRCORNER);
	attroff(a);
	snprintf(t, sizeof(t), " %s (%d) ", title, count);
	attron(focused ? A_REVERSE : A_BOLD);
	mvaddnstr(r->y, r->x + 2, t, r->w - 4);
	attroff(focused ? A_REVERSE : A_BOLD);
}

/* Keeps the selection inside the rows and on screen; the first row to show. */
static int
screen_scroll(struct ui *ui, int pane, int n, int visible)
{
	int *sel = &ui->sel[pane], *top = &ui->top[pane];

	if (*sel >= n)
		*sel = n - 1;
	if (*sel < 0)
		*sel = 0;
	if (*sel < *top)
		*top = *sel;
	if (*sel >= *top + visible)
		*top = *sel - visible + 1;
	if (*top > n - visible)
		*top = n - visible;
	if (*top < 0)
		*top = 0;
	return *top;
}

static void
screen_spark(int y, int x, int w, const struct model_hist *h, int utf8)
{
	char buf[SCREEN_SPARK_WIDTH * 3 + 1];

	if (w < 4)
		return;
	spark_render(h, w < SCREEN_SPARK_WIDTH ? w : SCREEN_SPARK_WIDTH, utf8, buf, sizeof(buf));
	mvaddstr(y, x, buf);
}

static void
screen_pane(const struct screen_rect *r, int pane, const struct model *m, struct ui *ui)
{
	const struct panel *p = screen_panels[pane];
	int n = p->rows(m, ui), visible = r->h - 3, inner = r->w - 2, focused = ui->focus == pane;
	int top;

	screen_box(r, p->title, n, focused);
	if (visible < 1 || inner < 1)
		return;
	screen_shown[pane] = visible;
	attron(A_UNDERLINE);
	mvaddnstr(r->y + 1, r->x + 1, p->header, inner);
	attroff(A_UNDERLINE);
	top = screen_scroll(ui, pane, n, visible);
	for (int i = top; i < n && i < top + visible; i++) {
		const struct model_hist *spark = NULL;
		char buf[512];
		enum panel_class c = p->row(m, ui, i, buf, sizeof(buf), &spark);
		attr_t a = screen_attr(c);
		int len = (int)strlen(buf), y = r->y + 2 + i - top;

		/* the selected key stays marked when another pane has the focus: b acts on it */
		if (i == ui->sel[pane] && (focused || pane == UI_KEYS))
			a |= focused ? A_REVERSE : A_BOLD;
		attron(a);
		mvaddnstr(y, r->x + 1, buf, inner);
		if (focused && i == ui->sel[pane] && len < inner)
			mvhline(y, r->x + 1 + len, ' ', inner - len);
		attroff(a);
		if (spark != NULL && len + 2 < inner)
			screen_spark(y, r->x + 2 + len, inner - len - 1, spark, ui->utf8);
	}
}

/*
 * The panes' rectangles between the header and the status line, by priority: the keys
 * (the actions act on them), then the backends, the datacenters and the request stream.
 */
static void
screen_layout(const struct model *m, struct screen_rect r[UI_NPANES], int y0, int lines, int cols)
{
	int bh, mid, dcw;

	memset(r, 0, sizeof(struct screen_rect) * UI_NPANES);
	if (lines < 4)
		return;
	if (lines < 9) {
		r[UI_KEYS] = (struct screen_rect){y0, 0, lines, cols};
		return;
	}
	bh = m->nbackends + 3;
	if (bh < 4)
		bh = 4;
	if (bh > lines / 3)
		bh = lines / 3 < 4 ? 4 : lines / 3;
	r[UI_BACKENDS] = (struct screen_rect){y0, 0, bh, cols};
	mid = lines - bh;
	if (lines >= 20) {
		/* the keys as many rows as they have, leaving the stream 40% (5 rows at least) */
		int want = (m->nkeys > m->ndcs ? m->nkeys : m->ndcs) + 3;
		int cap = mid - (mid * 2 / 5 > 5 ? mid * 2 / 5 : 5);

		if (want < 5)
			want = 5;
		mid = want < cap ? want : cap;
		r[UI_STREAM] = (struct screen_rect){y0 + bh + mid, 0, lines - bh - mid, cols};
	}
	/* the keys' columns come first: the datacenters get what is left */
	dcw = cols >= 96 ? SCREEN_DC_WIDTH : cols >= 80 ? cols - 58 : cols * 2 / 5;
	if (cols >= 60) {
		r[UI_KEYS] = (struct screen_rect){y0 + bh, 0, mid, cols - dcw};
		r[UI_DCS] = (struct screen_rect){y0 + bh, cols - dcw, mid, dcw};
	} else {
		r[UI_KEYS] = (struct screen_rect){y0 + bh, 0, mid, cols};
	}
}

static void
screen_header(const struct model *m, const struct ui *ui, double now)
{
	static const char *const labels[] = {"rps", "p99", "err", "cache"};
	const struct model_hist *hists[] = {&m->h_rps, &m->h_p99, &m->h_err, &m->h_cache};
	int x = 0, each = COLS / 4;
	char line[512];

	for (int i = 0; i < 2; i++) {
		panel_header_line(m, ui, now, i, line, sizeof(line));
		if (i == 0)
			attron(A_BOLD);
		mvaddnstr(i, 0, line, COLS);
		if (i == 0)
			attroff(A_BOLD);
	}
	if (!model_connected(m, now) && m->have_stats && screen_colors)
		mvchgat(0, 0, COLS, A_BOLD, SCREEN_C_BAD, NULL);
	for (int i = 0; i < 4 && x + 8 < COLS; i++, x += each) {
		mvaddstr(2, x, labels[i]);
		screen_spark(2, x + 6, each - 8, hists[i], ui->utf8);
	}
}

static void
screen_status(const struct ui *ui)
{
	const char *hint = "q quit  tab pane  j/k select  s strategy  b/u block/unblock  t tier"
	                   "  p pause  / filter  ? help";
	attr_t a = ui->status[0]
	               ? (ui->status_error && screen_colors ? COLOR_PAIR(SCREEN_C_BAD) : A_BOLD)
	               : A_DIM;

	attron(a);
	mvaddnstr(LINES - 1, 0, ui->status[0] ? ui->status : hint, COLS);
	attroff(a);
}

static void
screen_help(void)
{
	static const char *const lines[] = {
	    "gatetop keys",
	    "",
	    "q          quit",
	    "tab        next pane (shift-tab: previous)",
	    "j/k        move the selection (arrows, PgUp/PgDn, Home/End)",
	    "s          set the balancing strategy (empty: the next one)",
	    "b / u      block / unblock the selected key",
	    "t          set the selected key's tier",
	    "p          pause the display (data keeps coming)",
	    "/          filter keys and requests by substring",
	    "?          this help; any key closes it",
	};
	int n = (int)(sizeof(lines) / sizeof(lines[0])), h = n + 2, w = 64;
	WINDOW *win;

	if (h > LINES)
		h = LINES;
	if (w > COLS)
		w = COLS;
	win = newwin(h, w, (LINES - h) / 2, (COLS - w) / 2);
	if (win == NULL)
		return;
	werase(win);
	box(win, 0, 0);
	for (int i = 0; i < n && i + 1 < h - 1; i++)
		mvwaddnstr(win, i + 1, 2, lines[i], w - 4);
	wnoutrefresh(win);
	delwin(win);
}

void
screen_draw(const struct model *m, struct ui *ui, double now)
{
	struct screen_rect r[UI_NPANES];

	erase();
	memset(screen_shown, 0, sizeof(screen_shown));
	if (LINES < SCREEN_MIN_LINES || COLS < SCREEN_MIN_COLS) {
		char line[256];

		panel_header_line(m, ui, now, 0, line, sizeof(line));
		mvaddnstr(0, 0, line, COLS);
		mvaddnstr(LINES > 1 ? 1 : 0, 0, "terminal too small", COLS);
		wnoutrefresh(stdscr);
		doupdate();
		return;
	}
	screen_header(m, ui, now);
	screen_layout(m, r, PANEL_HEADER_LINES, LINES - PANEL_HEADER_LINES - 1, COLS);
	for (int p = 0; p < UI_NPANES; p++)
		if (r[p].h > 0 && r[p].w > 4)
			screen_pane(&r[p], p, m, ui);
	screen_status(ui);
	wnoutrefresh(stdscr);
	if (ui->help)
		screen_help();
	doupdate();
}

/*
 * The prompt on the last line: the end of a long question (its start scrolls off, so
 * the input keeps SCREEN_PROMPT_ROOM columns), then the end of the input typed so far.
 */
static void
screen_prompt_line(const char *question, const char *input)
{
	int qlen = (int)strlen(question), ilen = (int)strlen(input), room;

	if (qlen > COLS - SCREEN_PROMPT_ROOM)
		question += qlen - (COLS > SCREEN_PROMPT_ROOM ? COLS - SCREEN_PROMPT_ROOM : 0);
	attron(A_BOLD);
	mvaddnstr(LINES - 1, 0, question, COLS);
	attroff(A_BOLD);
	room = COLS - (int)strlen(question) - 1;
	if (room > 0)
		addnstr(input + (ilen > room ? ilen - room : 0), room);
}

int
screen_prompt(const char *question, char *out, size_t outlen)
{
	size_t len = 0;
	int ch, rc = -1;

	out[0] = '\0';
	curs_set(1);
	timeout(-1);
	for (;;) {
		move(LINES - 1, 0);
		clrtoeol();
		screen_prompt_line(question, out);
		refresh();
		ch = getch();
		if (ch == 27) /* Esc */
			break;
		if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
			rc = 0;
			break;
		}
		if ((ch == KEY_BACKSPACE || ch == 127 || ch == 8) && len > 0)
			out[--len] = '\0';
		else if (ch >= 32 && ch < 127 && len + 1 < outlen) {
			out[len++] = (char)ch;
			out[len] = '\0';
		}
	}
	curs_set(0);
	return rc;
}
