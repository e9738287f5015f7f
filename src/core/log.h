/* log.h — one structured line per event on stderr: "ts=… level=… msg=… k=v …".
 * The only place library code may write to a stream; quiet below the set level. */
#ifndef AF_CORE_LOG_H
#define AF_CORE_LOG_H

enum { AF_LOG_DEBUG = 0, AF_LOG_INFO = 1, AF_LOG_WARN = 2, AF_LOG_ERROR = 3, AF_LOG_OFF = 4 };

void af_log_set_level(int level);
int af_log_level(void);
/* af_log(AF_LOG_INFO, "round_commit", "project=%d round=%d", p, r) */
void af_log(int level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
