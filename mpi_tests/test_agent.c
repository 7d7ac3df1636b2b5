/* Agents: generated names, explicit names, duplicates, name length limits, argument errors,
 * destroy and re-create with the same name. */
#include "common.h"

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank();
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));

    /* cfg NULL: generated "host_pid_counter" names, distinct. */
    mpixfer_agent_t *g1 = NULL, *g2 = NULL;
    CHECK_OK(mpixfer_agent_create(ctx, NULL, &g1));
    CHECK_OK(mpixfer_agent_create(ctx, NULL, &g2));
    CHECK(g1 != NULL && g2 != NULL && g1 != g2);
    const char *n1 = mpixfer_agent_name(g1), *n2 = mpixfer_agent_name(g2);
    CHECK(n1 != NULL && n2 != NULL && n1[0] != '\0');
    CHECK_MSG(strcmp(n1, n2) != 0, "two generated names are both '%s'", n1);
    char pidpart[64];
    snprintf(pidpart, sizeof pidpart, "_%ld_", (long)getpid());
    CHECK_MSG(strstr(n1, pidpart) != NULL, "generated name '%s' lacks '%s'", n1, pidpart);
    CHECK(strlen(n1) <= 255);
    /* Config with name NULL also generates. */
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *g3 = NULL;
    CHECK_OK(mpixfer_agent_create(ctx, &cfg, &g3));
    CHECK(strcmp(mpixfer_agent_name(g3), n1) != 0 && strcmp(mpixfer_agent_name(g3), n2) != 0);

    /* Explicit names; a duplicate in this process is EXISTS and leaves agent_p alone. */
    char name[64];
    tst_name(name, sizeof name, "agent_test_", rank);
    mpixfer_agent_t *a = tst_agent(ctx, name);
    mpixfer_agent_t *dup = (mpixfer_agent_t *)(uintptr_t)0x1;
    cfg.name = name;
    CHECK_STATUS(mpixfer_agent_create(ctx, &cfg, &dup), MPIXFER_ERR_EXISTS);
    CHECK(dup == (mpixfer_agent_t *)(uintptr_t)0x1);
    /* The name was copied: changing our buffer does not rename the agent. */
    char mutable_name[64];
    snprintf(mutable_name, sizeof mutable_name, "mutable_%d", rank);
    cfg.name = mutable_name;
    mpixfer_agent_t *m = NULL;
    CHECK_OK(mpixfer_agent_create(ctx, &cfg, &m));
    mutable_name[0] = 'X';
    CHECK(strncmp(mpixfer_agent_name(m), "mutable_", 8) == 0);

    /* Bad names. */
    cfg.name = "";
    CHECK_STATUS(mpixfer_agent_create(ctx, &cfg, &dup), MPIXFER_ERR_INVALID_ARG);
    char longname[300];
    memset(longname, 'n', sizeof longname);
    longname[256] = '\0'; /* 256 bytes: too long */
    snprintf(longname, 8, "L%d_", rank);
    longname[strlen(longname)] = 'n';
    CHECK(strlen(longname) == 256);
    cfg.name = longname;
    CHECK_STATUS(mpixfer_agent_create(ctx, &cfg, &dup), MPIXFER_ERR_INVALID_ARG);
    longname[255] = '\0'; /* 255 bytes: the limit, accepted */
    mpixfer_agent_t *lim = NULL;
    CHECK_OK(mpixfer_agent_create(ctx, &cfg, &lim));
    CHECK(strcmp(mpixfer_agent_name(lim), longname) == 0);
    CHECK(dup == (mpixfer_agent_t *)(uintptr_t)0x1);

    /* Argument errors. */
    cfg.name = "never_created";
    CHECK_STATUS(mpixfer_agent_create(NULL, &cfg, &dup), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_agent_create(ctx, &cfg, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_agent_destroy(NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_agent_name(NULL) == NULL);

    /* Destroying frees the name for reuse. */
    CHECK_OK(mpixfer_agent_destroy(a));
    a = tst_agent(ctx, name);
    CHECK_OK(mpixfer_agent_destroy(a));

    CHECK_OK(mpixfer_agent_destroy(g1));
    CHECK_OK(mpixfer_agent_destroy(g2));
    CHECK_OK(mpixfer_agent_destroy(g3));
    CHECK_OK(mpixfer_agent_destroy(m));
    CHECK_OK(mpixfer_agent_destroy(lim));

    /* Agents still alive at context destroy are destroyed by it. */
    mpixfer_agent_t *left = tst_agent(ctx, "left_behind_agent_x");
    (void)left;
    CHECK_OK(mpixfer_context_destroy(ctx));
    return tst_finish("test_agent");
}
