/* Uses an installed mpixfer: the header, the library and MPI's symbols must all resolve. */
#include <mpixfer.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    char expected[32];
    const char *version = mpixfer_version();
    const char *text = mpixfer_strerror(MPIXFER_ERR_NOT_FOUND);
    int mpi_initialized = -1;

    if (MPI_Initialized(&mpi_initialized) != MPI_SUCCESS || mpi_initialized) {
        fprintf(stderr, "install-smoke: MPI_Initialized failed\n");
        return 1;
    }
    snprintf(expected, sizeof expected, "%d.%d.%d", MPIXFER_VERSION_MAJOR, MPIXFER_VERSION_MINOR,
             MPIXFER_VERSION_PATCH);
    if (version == NULL || strcmp(version, expected) != 0) {
        fprintf(stderr, "install-smoke: library version '%s', header %s\n",
                version ? version : "(null)", expected);
        return 1;
    }
    if (text == NULL || text[0] == '\0') {
        fprintf(stderr, "install-smoke: empty strerror\n");
        return 1;
    }
    if (strcmp(mpixfer_strerror(MPIXFER_OK), "success") != 0) {
        fprintf(stderr, "install-smoke: strerror(MPIXFER_OK) is '%s'\n",
                mpixfer_strerror(MPIXFER_OK));
        return 1;
    }
    printf("install-smoke: mpixfer %s, %s\n", version, text);
    return 0;
}
