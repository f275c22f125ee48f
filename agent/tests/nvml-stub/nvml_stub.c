/*
 * A stand-in libnvidia-ml.so.1 for tests on machines without a GPU: it exports, with their real
 * C signatures, the NVML entry points the agent calls through nvml-wrapper (which resolves each
 * symbol on first use, so these are all it needs), and answers from a scenario file.
 *
 * Built by agent/tests/gpu.rs:  cc -shared -fPIC -DSCENARIO='"/path/scenario"' -o DIR/libnvidia-ml.so.1 nvml_stub.c
 *
 * Scenario file, one setting per line (missing ones get defaults derived from the index):
 *   init_error <nvmlReturn>          nvmlInit_v2 fails with this code (9: driver not loaded)
 *   driver <version>                 cuda <int, e.g. 12040>           devices <count>
 *   xid <index> <xid>                an event nvmlEventSetWait_v2 delivers (queued in order)
 *   dev <index> name <rest of line>  dev <index> uuid <uuid>          dev <index> pci <bus id>
 *   dev <index> <key> <number>       key: memory_total memory_used temp throttle ecc_dbe
 *                                    pending_retire remap_pending remap_failure persistence mig
 *                                    cc_major cc_minor proc_pid proc_mem
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SCENARIO
#error "build with -DSCENARIO='\"/path/to/scenario\"'"
#endif

typedef int nvmlReturn_t;
enum {
    OK = 0, UNINITIALIZED = 1, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, INSUFFICIENT_SIZE = 7,
    TIMEOUT = 10
};
#define MAX_DEV 16
#define MAX_XID 64
#define XID_CRITICAL 0x8ULL

struct dev {
    unsigned index;
    char name[96], uuid[96], pci[32];
    unsigned long long memory_total, memory_used, throttle, ecc_dbe;
    unsigned temp, pending_retire, remap_pending, remap_failure, persistence, mig;
    int cc_major, cc_minor;
    unsigned proc_pid;
    unsigned long long proc_mem;
};
typedef struct dev *nvmlDevice_t;
typedef struct { int unused; } *nvmlEventSet_t;

static struct dev devs[MAX_DEV];
static unsigned ndev = 1, cuda = 12040;
static int init_error = 0, loaded = 0;
static char driver[64] = "550.54.15";
static unsigned xid_dev[MAX_XID];
static unsigned long long xid_val[MAX_XID];
static int nxid = 0, next_xid = 0;
static int event_set_token;

static void defaults(void) {
    for (unsigned i = 0; i < MAX_DEV; i++) {
        struct dev *d = &devs[i];
        memset(d, 0, sizeof *d);
        d->index = i;
        snprintf(d->name, sizeof d->name, "NVIDIA Stub GPU");
        snprintf(d->uuid, sizeof d->uuid, "GPU-00000000-0000-0000-0000-%012u", i);
        snprintf(d->pci, sizeof d->pci, "00000000:%02X:00.0", 0x18 + i);
        d->memory_total = 85899345920ULL;
        d->temp = 35;
        d->persistence = 1;
        d->cc_major = 9;
    }
}

static void setstr(char *dst, size_t len, const char *src) {
    size_t n = strlen(src);
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void load(void) {
    if (loaded) return;
    loaded = 1;
    defaults();
    FILE *f = fopen(SCENARIO, "r");
    if (!f) return;
    char line[256], key[64];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        unsigned i;
        unsigned long long v;
        int off = 0;
        if (sscanf(line, "init_error %d", &init_error) == 1) continue;
        if (sscanf(line, "driver %63s", driver) == 1) continue;
        if (sscanf(line, "cuda %u", &cuda) == 1) continue;
        if (sscanf(line, "devices %u", &ndev) == 1) { if (ndev > MAX_DEV) ndev = MAX_DEV; continue; }
        if (sscanf(line, "xid %u %llu", &i, &v) == 2 && nxid < MAX_XID) {
            xid_dev[nxid] = i; xid_val[nxid] = v; nxid++; continue;
        }
        if (sscanf(line, "dev %u %63s %n", &i, key, &off) < 2 || i >= MAX_DEV || off == 0) continue;
        struct dev *d = &devs[i];
        const char *rest = line + off;
        if (!strcmp(key, "name")) { setstr(d->name, sizeof d->name, rest); continue; }
        if (!strcmp(key, "uuid")) { setstr(d->uuid, sizeof d->uuid, rest); continue; }
        if (!strcmp(key, "pci")) { setstr(d->pci, sizeof d->pci, rest); continue; }
        v = strtoull(rest, NULL, 10);
        if (!strcmp(key, "memory_total")) d->memory_total = v;
        else if (!strcmp(key, "memory_used")) d->memory_used = v;
        else if (!strcmp(key, "temp")) d->temp = (unsigned)v;
        else if (!strcmp(key, "throttle")) d->throttle = v;
        else if (!strcmp(key, "ecc_dbe")) d->ecc_dbe = v;
        else if (!strcmp(key, "pending_retire")) d->pending_retire = (unsigned)v;
        else if (!strcmp(key, "remap_pending")) d->remap_pending = (unsigned)v;
        else if (!strcmp(key, "remap_failure")) d->remap_failure = (unsigned)v;
        else if (!strcmp(key, "persistence")) d->persistence = (unsigned)v;
        else if (!strcmp(key, "mig")) d->mig = (unsigned)v;
        else if (!strcmp(key, "cc_major")) d->cc_major = (int)v;
        else if (!strcmp(key, "cc_minor")) d->cc_minor = (int)v;
        else if (!strcmp(key, "proc_pid")) d->proc_pid = (unsigned)v;
        else if (!strcmp(key, "proc_mem")) d->proc_mem = v;
    }
    fclose(f);
}

static int valid(nvmlDevice_t d) { return d >= devs && d < devs + ndev; }
static nvmlReturn_t copy(char *dst, unsigned len, const char *src) {
    if (strlen(src) + 1 > len) return INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return OK;
}

nvmlReturn_t nvmlInit_v2(void) { load(); return init_error; }
nvmlReturn_t nvmlInitWithFlags(unsigned flags) { (void)flags; return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) { return OK; }
const char *nvmlErrorString(nvmlReturn_t r) { return r == OK ? "Success" : "stub error"; }

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned len) { return copy(v, len, driver); }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = (int)cuda; return OK; }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n) { *n = ndev; return OK; }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *d) {
    if (i >= ndev) return INVALID_ARGUMENT;
    *d = &devs[i];
    return OK;
}
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned *i) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *i = d->index;
    return OK;
}
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *s, unsigned len) {
    return valid(d) ? copy(s, len, d->name) : INVALID_ARGUMENT;
}
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *s, unsigned len) {
    return valid(d) ? copy(s, len, d->uuid) : INVALID_ARGUMENT;
}

typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    if (!valid(d)) return INVALID_ARGUMENT;
    m->total = d->memory_total;
    m->used = d->memory_used;
    m->reserved = 0;
    m->free = d->memory_total - d->memory_used;
    return OK;
}
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *major = d->cc_major;
    *minor = d->cc_minor;
    return OK;
}
nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t d, int *mode) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *mode = (int)d->persistence;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned *current, unsigned *pending) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *current = *pending = d->mig;
    return OK;
}

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *p) {
    if (!valid(d)) return INVALID_ARGUMENT;
    memset(p, 0, sizeof *p);
    snprintf(p->busId, sizeof p->busId, "%s", d->pci);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%s", d->pci + 4);
    p->bus = 0x18 + d->index;
    p->pciDeviceId = 0x233010de;
    return OK;
}
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned *t) {
    if (!valid(d) || sensor != 0) return INVALID_ARGUMENT;
    *t = d->temp;
    return OK;
}
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *r = d->throttle;
    return OK;
}
nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter, unsigned long long *n) {
    if (!valid(d)) return INVALID_ARGUMENT;
    /* type 1: uncorrected (double-bit); counter 0: volatile */
    *n = (type == 1 && counter == 0) ? d->ecc_dbe : 0;
    return OK;
}
nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t d, int *pending) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *pending = (int)d->pending_retire;
    return OK;
}

typedef struct {
    unsigned fieldId, scopeId;
    long long timestamp, latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    union { double d; unsigned ui; unsigned long ul; unsigned long long ull; long long sll; } value;
} nvmlFieldValue_t;
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *v) {
    if (!valid(d)) return INVALID_ARGUMENT;
    for (int i = 0; i < count; i++) {
        v[i].valueType = 1; /* unsigned int */
        v[i].nvmlReturn = OK;
        switch (v[i].fieldId) {
        case 144: v[i].value.ui = d->remap_pending; break;
        case 145: v[i].value.ui = d->remap_failure; break;
        case 142: case 143: v[i].value.ui = 0; break;
        default: v[i].nvmlReturn = NOT_SUPPORTED;
        }
    }
    return OK;
}

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *count, nvmlProcessInfo_t *p) {
    if (!valid(d)) return INVALID_ARGUMENT;
    unsigned have = d->proc_pid ? 1 : 0;
    if (*count < have) { *count = have; return INSUFFICIENT_SIZE; }
    *count = have;
    if (have) {
        p[0].pid = d->proc_pid;
        p[0].usedGpuMemory = d->proc_mem;
        p[0].gpuInstanceId = p[0].computeInstanceId = 0xFFFFFFFFu;
    }
    return OK;
}

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;
nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) { *set = (nvmlEventSet_t)&event_set_token; return OK; }
nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) { (void)set; return OK; }
nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    if (!valid(d)) return INVALID_ARGUMENT;
    *types = XID_CRITICAL;
    return OK;
}
nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    (void)set;
    return valid(d) && (types & ~XID_CRITICAL) == 0 ? OK : NOT_SUPPORTED;
}
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned timeout_ms) {
    (void)set;
    if (next_xid < nxid) {
        int i = next_xid++;
        memset(data, 0, sizeof *data);
        data->device = xid_dev[i] < ndev ? &devs[xid_dev[i]] : NULL;
        data->eventType = XID_CRITICAL;
        data->eventData = xid_val[i];
        return OK;
    }
    /* Wait a little, not the whole timeout: the tests should not idle. */
    usleep((timeout_ms < 20 ? timeout_ms : 20) * 1000);
    return TIMEOUT;
}
