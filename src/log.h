/* Logging to stderr, level from MPIXFER_LOG=error|warn|info|debug (default warn). */
#ifndef MPIXFER_LOG_H
#define MPIXFER_LOG_H

#include "mpixfer.h"

typedef enum {
    MPIXFER__LOG_ERROR = 0,
    MPIXFER__LOG_WARN = 1,
    MPIXFER__LOG_INFO = 2,
    MPIXFER__LOG_DEBUG = 3
} mpixfer__log_level_t;

/* The level in force; read from the environment once. */
mpixfer__log_level_t mpixfer__log_level(void);

void mpixfer__log(mpixfer__log_level_t level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs the MPI error string of @p mpi_rc and returns MPIXFER_ERR_MPI. */
mpixfer_status_t mpixfer__mpi_error(const char *func, const char *call, int mpi_rc);

#define MPIXFER__LOG(level, ...)                                                                   \
    do {                                                                                           \
        if ((level) <= mpixfer__log_level())                                                       \
            mpixfer__log((level), __func__, __VA_ARGS__);                                          \
    } while (0)

#define LOG_ERROR(...) MPIXFER__LOG(MPIXFER__LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) MPIXFER__LOG(MPIXFER__LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...) MPIXFER__LOG(MPIXFER__LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) MPIXFER__LOG(MPIXFER__LOG_DEBUG, __VA_ARGS__)

/* Bad input: log at warn level (the caller's bug, not ours) and return the status. */
#define MPIXFER__FAIL(status, ...)                                                                 \
    do {                                                                                           \
        LOG_WARN(__VA_ARGS__);                                                                     \
        return (status);                                                                           \
    } while (0)

#define MPIXFER__MPI_ERR(call, rc) mpixfer__mpi_error(__func__, (call), (rc))

#endif
