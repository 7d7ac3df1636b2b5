/* Status strings and logging. */
#define _GNU_SOURCE
#include <mpi.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mpixfer.h"

const char *mpixfer_strerror(mpixfer_status_t status)
{
    switch (status) {
#define MPIXFER_STATUS_MSG_(name, value, msg)                                                      \
    case name:                                                                                     \
        return msg;
        MPIXFER_STATUS_LIST(MPIXFER_STATUS_MSG_)
#undef MPIXFER_STATUS_MSG_
    }
    return "unknown status";
}

const char *mpixfer_status_name(mpixfer_status_t status)
{
    switch (status) {
#define MPIXFER_STATUS_NAME_(name, value, msg)                                                     \
    case name:                                                                                     \
        return #name;
        MPIXFER_STATUS_LIST(MPIXFER_STATUS_NAME_)
#undef MPIXFER_STATUS_NAME_
    }
    return "MPIXFER_UNKNOWN";
}

#define MPIXFER_STR2_(x) #x
#define MPIXFER_STR_(x) MPIXFER_STR2_(x)

const char *mpixfer_version(void)
{
    return MPIXFER_STR_(MPIXFER_VERSION_MAJOR) "." MPIXFER_STR_(
        MPIXFER_VERSION_MINOR) "." MPIXFER_STR_(MPIXFER_VERSION_PATCH);
}

static mpixfer__log_level_t log_level = MPIXFER__LOG_WARN;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_init(void)
{
    const char *env = getenv("MPIXFER_LOG");
    if (env == NULL || *env == '\0')
        return;
    if (strcasecmp(env, "error") == 0)
        log_level = MPIXFER__LOG_ERROR;
    else if (strcasecmp(env, "warn") == 0 || strcasecmp(env, "warning") == 0)
        log_level = MPIXFER__LOG_WARN;
    else if (strcasecmp(env, "info") == 0)
        log_level = MPIXFER__LOG_INFO;
    else if (strcasecmp(env, "debug") == 0 || strcasecmp(env, "trace") == 0)
        log_level = MPIXFER__LOG_DEBUG;
    else
        fprintf(stderr, "[mpixfer] warn: MPIXFER_LOG=%s not understood; using warn\n", env);
}

mpixfer__log_level_t mpixfer__log_level(void)
{
    pthread_once(&log_once, log_init);
    return log_level;
}

void mpixfer__log(mpixfer__log_level_t level, const char *func, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char buf[1024];
    int rank = -1, initialized = 0, finalized = 0;
    va_list ap;

    /* The world rank makes interleaved logs of several processes readable. */
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines of several threads do not interleave. */
    fprintf(stderr, "[mpixfer:%d] %s: %s: %s\n", rank, names[level], func, buf);
}

mpixfer_status_t mpixfer__mpi_error(const char *func, const char *call, int mpi_rc)
{
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;

    if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof(msg), "MPI error %d", mpi_rc);
    msg[len < 0 ? 0 : (len > MPI_MAX_ERROR_STRING ? MPI_MAX_ERROR_STRING : len)] = '\0';
    if (mpixfer__log_level() >= MPIXFER__LOG_ERROR)
        mpixfer__log(MPIXFER__LOG_ERROR, func, "%s failed: %s", call, msg);
    return MPIXFER_ERR_MPI;
}
