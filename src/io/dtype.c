/*
 * The safetensors element types: exact names and sizes in bits (FORMATS.md §7.2).
 *
 * The table is indexed by the pinned gptq_dtype values, so a lookup by value is an
 * array access and a lookup by name is a scan of 22 short strings (done once per
 * tensor when a header is parsed, which is cheap next to the JSON parse itself).
 */
#include <string.h>

#include "gptq/safetensors.h"
#include "internal.h"

typedef struct dtype_desc {
    const char *name;
    int32_t bits;
} dtype_desc;

/* Designated initialisers keep each entry next to the enum value it describes, so
 * appending a dtype to the enum cannot shift the table. */
static const dtype_desc dtype_table[] = {
    [GPTQ_DTYPE_UNKNOWN] = {NULL, 0},
    [GPTQ_DTYPE_BOOL] = {"BOOL", 8},
    [GPTQ_DTYPE_U8] = {"U8", 8},
    [GPTQ_DTYPE_I8] = {"I8", 8},
    [GPTQ_DTYPE_I16] = {"I16", 16},
    [GPTQ_DTYPE_U16] = {"U16", 16},
    [GPTQ_DTYPE_F16] = {"F16", 16},
    [GPTQ_DTYPE_BF16] = {"BF16", 16},
    [GPTQ_DTYPE_I32] = {"I32", 32},
    [GPTQ_DTYPE_U32] = {"U32", 32},
    [GPTQ_DTYPE_F32] = {"F32", 32},
    [GPTQ_DTYPE_F64] = {"F64", 64},
    [GPTQ_DTYPE_I64] = {"I64", 64},
    [GPTQ_DTYPE_U64] = {"U64", 64},
    [GPTQ_DTYPE_F8_E5M2] = {"F8_E5M2", 8},
    [GPTQ_DTYPE_F8_E4M3] = {"F8_E4M3", 8},
    [GPTQ_DTYPE_F8_E8M0] = {"F8_E8M0", 8},
    [GPTQ_DTYPE_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [GPTQ_DTYPE_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [GPTQ_DTYPE_C64] = {"C64", 64},
    [GPTQ_DTYPE_F4] = {"F4", 4},
    [GPTQ_DTYPE_F6_E2M3] = {"F6_E2M3", 6},
    [GPTQ_DTYPE_F6_E3M2] = {"F6_E3M2", 6},
};

#define DTYPE_COUNT ((int32_t)(sizeof dtype_table / sizeof dtype_table[0]))

const char *gptq_dtype_name(int32_t dtype)
{
    if (dtype <= GPTQ_DTYPE_UNKNOWN || dtype >= DTYPE_COUNT)
        return NULL;
    return dtype_table[dtype].name;
}

int32_t gptq_dtype_bits(int32_t dtype)
{
    if (dtype <= GPTQ_DTYPE_UNKNOWN || dtype >= DTYPE_COUNT)
        return 0;
    return dtype_table[dtype].bits;
}

int32_t gptq_dtype_from_name(const char *name)
{
    if (!name)
        return GPTQ_DTYPE_UNKNOWN;
    /* strcmp, not strcasecmp: the format's names are case-sensitive ("f32" is not F32). */
    for (int32_t i = GPTQ_DTYPE_UNKNOWN + 1; i < DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return i;
    return GPTQ_DTYPE_UNKNOWN;
}
