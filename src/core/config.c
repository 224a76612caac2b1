/*
 * Quantization configuration: defaults and validation.
 */
#include "internal.h"

void gptq_config_init(gptq_config *cfg)
{
    if (!cfg)
        return;
    cfg->struct_size = (uint32_t)sizeof *cfg;
    cfg->bits = 4;
    cfg->group_size = 128;
    cfg->sym = 1;
    cfg->desc_act = 0;
    cfg->static_groups = 0;
    cfg->block_size = 128;
    cfg->rtn = 0;
    cfg->damp_percent = 0.01;
    cfg->damp_auto_increment = 0.01;
    cfg->inverse = GPTQ_INVERSE_FAST;
}

int gptq_config_validate(gptq_ctx *ctx, const gptq_config *cfg)
{
    if (!cfg)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "config is NULL");
    if (cfg->struct_size < sizeof(gptq_config))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "config.struct_size is %u, expected %zu: call gptq_config_init() first",
                         (unsigned)cfg->struct_size, sizeof(gptq_config));
    if (cfg->bits != 2 && cfg->bits != 3 && cfg->bits != 4 && cfg->bits != 8)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "bits = %d is not supported (2, 3, 4 or 8)",
                         (int)cfg->bits);
    if (cfg->group_size != -1 && cfg->group_size < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "group_size = %d is not supported (-1 or a positive number)",
                         (int)cfg->group_size);
    if (cfg->block_size < 1 || cfg->block_size > 512)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "block_size = %d is outside [1, 512]",
                         (int)cfg->block_size);
    if (!(cfg->damp_percent > 0.0 && cfg->damp_percent < 1.0))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "damp_percent = %g is outside (0, 1)", cfg->damp_percent);
    if (!(cfg->damp_auto_increment >= 0.0 && cfg->damp_auto_increment < 1.0))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "damp_auto_increment = %g is outside [0, 1)", cfg->damp_auto_increment);
    if ((cfg->sym != 0 && cfg->sym != 1) || (cfg->desc_act != 0 && cfg->desc_act != 1) ||
        (cfg->static_groups != 0 && cfg->static_groups != 1) || (cfg->rtn != 0 && cfg->rtn != 1))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "sym, desc_act, static_groups and rtn must be 0 or 1");
    if (cfg->inverse != GPTQ_INVERSE_FAST && cfg->inverse != GPTQ_INVERSE_REFERENCE)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "inverse = %d is not a GPTQ_INVERSE_* value",
                         (int)cfg->inverse);
    if (cfg->rtn && cfg->desc_act)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "act-order (desc_act) needs GPTQ's Hessian; it cannot be combined with rtn");
    return GPTQ_OK;
}

int64_t gptq_num_groups(int64_t in_features, int32_t group_size)
{
    if (in_features < 1 || (group_size != -1 && group_size < 1))
        return -1;
    if (group_size == -1)
        return 1;
    return (in_features + group_size - 1) / group_size;
}
