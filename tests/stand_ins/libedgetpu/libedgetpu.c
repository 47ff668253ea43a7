/*
 * Stand-in for Coral's libedgetpu.so.1, for tests on machines without an
 * Edge TPU.  Build:
 *
 *     cc -shared -fPIC -O2 -o libedgetpu.so.1 libedgetpu.c
 *
 * It exports what the device agent touches in the real library:
 *
 *   - the TFLite external-delegate plugin entry points
 *     tflite_plugin_create_delegate / tflite_plugin_destroy_delegate
 *     (what Python's load_delegate() calls);
 *   - edgetpu_version(), edgetpu_list_devices(), edgetpu_free_devices(),
 *     edgetpu_verbosity(), edgetpu_create_delegate(), edgetpu_free_delegate()
 *     from Coral's edgetpu_c.h.
 *
 * Behaviour is chosen by environment variables, read when a delegate is
 * created (so a test can set them in a child process before load_delegate):
 *
 *   EDGETPU_STANDIN_MODE        ok (default) | segfault | abort | hang | refuse
 *                               (refuse at create returns NULL without
 *                               calling report_error, as the real library
 *                               does when it finds no device; at prepare or
 *                               invoke it returns kTfLiteError.)
 *   EDGETPU_STANDIN_STAGE       create (default) | prepare | invoke
 *                               where a non-ok mode strikes: in
 *                               tflite_plugin_create_delegate, in the
 *                               delegate's Prepare (run by the interpreter
 *                               when it applies the delegate), or in the
 *                               delegated kernel's invoke.
 *   EDGETPU_STANDIN_LATENCY_US  ok mode: microseconds each invoke sleeps
 *                               (default 2500).
 *   EDGETPU_STANDIN_OUTPUT      ok mode: copy (default: output byte i is
 *                               byte i mod n of the first input) | zeros.
 *   EDGETPU_STANDIN_VERSION     string edgetpu_version() returns.
 *   EDGETPU_STANDIN_DEVICES     devices edgetpu_list_devices() reports,
 *                               comma separated "usb:PATH" / "pci:PATH";
 *                               default one USB device; "" gives none.
 *   EDGETPU_STANDIN_LOG         file to append one line per event to
 *                               (create with its options, prepare, invoke,
 *                               destroy), so tests can see what happened.
 *
 * In ok mode the delegate's Prepare claims every node whose registration is
 * the custom op "edgetpu-custom-op" (the op the Edge TPU compiler emits), as
 * the real delegate does; the interpreter then runs our kernel instead of
 * failing on the unresolved custom op.
 *
 * The structs below mirror the field order of TensorFlow Lite's public C API
 * (tensorflow/lite/core/c/common.h, also tflite/core/c/common.h in LiteRT),
 * checked against LiteRT 2.x (ai-edge-litert 2.3.0).  Only what this file
 * reads or writes is declared; structs we only reach through a pointer are
 * declared up to the last field we use.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- mirror of the TFLite C API (common.h) ------------------------------ */

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

enum { kTfLiteBuiltinCustom = 32 };
enum { kTfLiteDelegateFlagsAllowDynamicTensors = 1 };

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct TfLiteQuantization {
  int type; /* TfLiteQuantizationType */
  void* params;
} TfLiteQuantization;

struct TfLiteDelegate;
struct TfLiteContext;

/* Full struct: the interpreter hands us an array of these, so the size
 * (112 bytes on LP64) must match.  Unchanged since TF 2.x added
 * dims_signature; checked in LiteRT 2.x. */
typedef struct TfLiteTensor {
  int type; /* TfLiteType */
  union {
    void* data;
    uint8_t* uint8;
    char* raw;
  } data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

/* Only reached through pointers; declared in full for clarity. */
typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

/* Passed BY VALUE to ReplaceNodeSubsetsWithDelegateKernels, so its size is
 * part of the ABI.  This is the current layout (TFLite 2.14+ / LiteRT: 88
 * bytes on LP64).  A runtime with the older, shorter layout (TFLite <= 2.12:
 * only up to `version`, 64 bytes) just ignores the tail, so the newest
 * layout is the safe one to pass.  The reverse -- a delegate built with the
 * short layout handed to a new runtime -- makes the runtime read stack
 * garbage as registration_external, the likely cause of the stock
 * libedgetpu 16.0 crashes with TFLite > 2.11 (see docs/runtime-matrix.md). */
typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext* context, const char* buffer,
                size_t length);
  void (*free)(struct TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(struct TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const struct TfLiteContext* context,
                                  const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external; /* TfLiteOperator*, NULL for us */
  void* (*async_kernel)(struct TfLiteContext* context, TfLiteNode* node);
  uint64_t inplace_operator; /* kTfLiteInplaceOpNone = 0 */
} TfLiteRegistration;

typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

/* Prefix only: we never allocate one, and stop after the last member used. */
typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context,
                                   TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext* context,
                               TfLiteTensor* tensor, TfLiteIntArray* size);
  void (*ReportError)(struct TfLiteContext* context, const char* msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext* context, int n,
                             int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext* context,
                                         int node_index, TfLiteNode** node,
                                         TfLiteRegistration** registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(
      struct TfLiteContext* context, TfLiteRegistration registration,
      const TfLiteIntArray* nodes_to_replace, struct TfLiteDelegate* delegate);
} TfLiteContext;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context,
                          struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context,
                                       struct TfLiteDelegate* delegate,
                                       int buffer_handle, TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context,
                                     struct TfLiteDelegate* delegate,
                                     int buffer_handle, TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context,
                           struct TfLiteDelegate* delegate, int* handle);
  int64_t flags;
  void* opaque_delegate_builder; /* must be NULL: we are a classic delegate */
} TfLiteDelegate;

#if UINTPTR_MAX == 0xffffffffffffffffULL
_Static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor size (LP64)");
_Static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration (LP64)");
_Static_assert(offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels)
                   == 64, "TfLiteContext prefix (LP64)");
_Static_assert(sizeof(TfLiteDelegate) == 56, "TfLiteDelegate (LP64)");
#endif

/* ---- configuration ------------------------------------------------------ */

#define CUSTOM_OP_NAME "edgetpu-custom-op"
/* What Coral's stock 16.0 package (libedgetpu1-std/-max 16.0) reports, as
 * printed by pycoral's get_runtime_version(); a build from source says
 * "BuildLabel(COMPILER=<__VERSION__>,DATE=<__DATE__>,TIME=<__TIME__>),
 * RuntimeVersion(14)" instead (libedgetpu port/default/builddata.h). */
#define DEFAULT_VERSION \
  "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"

typedef enum { MODE_OK, MODE_SEGFAULT, MODE_ABORT, MODE_HANG, MODE_REFUSE } Mode;
typedef enum { STAGE_CREATE, STAGE_PREPARE, STAGE_INVOKE } Stage;

typedef struct Standin {
  TfLiteDelegate base; /* first, so TfLiteDelegate* == Standin* */
  Mode mode;
  Stage stage;
  long latency_us;
  bool copy_output;
  long invokes;
} Standin;

typedef struct Kernel {
  Standin* standin;
} Kernel;

static void log_event(const char* fmt, ...) {
  const char* path = getenv("EDGETPU_STANDIN_LOG");
  if (path == NULL || *path == '\0') return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t ignored = write(fd, line, (size_t)n); /* one write: O_APPEND atomic */
  (void)ignored;
  close(fd);
}

static const char* env_or(const char* name, const char* fallback) {
  const char* v = getenv(name);
  return (v != NULL && *v != '\0') ? v : fallback;
}

/* Returns false for an unknown value, with *mode untouched. */
static bool parse_mode(const char* s, Mode* mode) {
  static const struct { const char* name; Mode mode; } table[] = {
      {"ok", MODE_OK},     {"segfault", MODE_SEGFAULT}, {"abort", MODE_ABORT},
      {"hang", MODE_HANG}, {"refuse", MODE_REFUSE},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    if (strcmp(s, table[i].name) == 0) {
      *mode = table[i].mode;
      return true;
    }
  }
  return false;
}

static bool parse_stage(const char* s, Stage* stage) {
  if (strcmp(s, "create") == 0) *stage = STAGE_CREATE;
  else if (strcmp(s, "prepare") == 0) *stage = STAGE_PREPARE;
  else if (strcmp(s, "invoke") == 0) *stage = STAGE_INVOKE;
  else return false;
  return true;
}

/* ---- the misbehaviours -------------------------------------------------- */

static volatile uintptr_t g_null_address = 0; /* volatile: a real fault */

static void crash_segfault(void) {
  log_event("segfault");
  *(volatile int*)g_null_address = 1;
  raise(SIGSEGV); /* not reached unless page 0 is mapped */
}

static void crash_abort(void) {
  log_event("abort");
  abort();
}

static void hang_forever(void) {
  log_event("hang");
  for (;;) pause();
}

/* Sleeps `us` microseconds as a device that takes that long would: until an
 * absolute deadline (so an interrupted sleep does not start over), with the
 * thread's timer slack lowered to 1 us meanwhile.  Linux lets a sleep overrun by
 * the slack (50 us by default) and a VM's timer adds more: a plain nanosleep of
 * 2.5 ms takes about 2.62 ms here, this one about 2.57 ms.  The caller's slack
 * is restored, so the agent's own threads keep their default. */
static void sleep_us(long us) {
  if (us <= 0) return;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += us / 1000000L;
  deadline.tv_nsec += (us % 1000000L) * 1000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (slack > 0) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) {
  }
  if (slack > 0) prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
}

/* Runs a non-ok mode that strikes at `here`.  Returns true if the caller
 * must report failure (refuse); crashes and hangs do not return. */
static bool misbehave_at(const Standin* s, Stage here) {
  if (s->mode == MODE_OK || s->stage != here) return false;
  switch (s->mode) {
    case MODE_SEGFAULT: crash_segfault(); break;
    case MODE_ABORT: crash_abort(); break;
    case MODE_HANG: hang_forever(); break;
    case MODE_REFUSE: return true;
    case MODE_OK: break;
  }
  return false;
}

/* ---- the delegated kernel ----------------------------------------------- */

static void* kernel_init(TfLiteContext* context, const char* buffer,
                         size_t length) {
  (void)context;
  (void)length;
  const TfLiteDelegateParams* params = (const TfLiteDelegateParams*)buffer;
  Kernel* k = calloc(1, sizeof *k);
  if (k != NULL) k->standin = (Standin*)params->delegate;
  return k;
}

static void kernel_free(TfLiteContext* context, void* buffer) {
  (void)context;
  free(buffer);
}

static TfLiteStatus kernel_prepare(TfLiteContext* context, TfLiteNode* node) {
  (void)context;
  return node->user_data != NULL ? kTfLiteOk : kTfLiteError;
}

static TfLiteStatus kernel_invoke(TfLiteContext* context, TfLiteNode* node) {
  Kernel* k = node->user_data;
  Standin* s = k->standin;
  if (misbehave_at(s, STAGE_INVOKE)) {
    log_event("invoke refused");
    context->ReportError(context, "edgetpu stand-in: invoke refused "
                                  "(EDGETPU_STANDIN_MODE=refuse)");
    return kTfLiteError;
  }
  sleep_us(s->latency_us);

  const uint8_t* in = NULL;
  size_t in_bytes = 0;
  if (node->inputs->size > 0 && node->inputs->data[0] >= 0) {
    const TfLiteTensor* t = &context->tensors[node->inputs->data[0]];
    in = t->data.uint8;
    in_bytes = t->bytes;
  }
  for (int i = 0; i < node->outputs->size; i++) {
    int idx = node->outputs->data[i];
    if (idx < 0 || (size_t)idx >= context->tensors_size) continue;
    TfLiteTensor* out = &context->tensors[idx];
    if (out->data.uint8 == NULL) continue;
    if (s->copy_output && in != NULL && in_bytes > 0) {
      for (size_t b = 0; b < out->bytes; b++) out->data.uint8[b] = in[b % in_bytes];
    } else {
      memset(out->data.uint8, 0, out->bytes);
    }
  }
  s->invokes++;
  log_event("invoke %ld latency_us=%ld", s->invokes, s->latency_us);
  return kTfLiteOk;
}

/* ---- the delegate ------------------------------------------------------- */

static bool is_edgetpu_op(const TfLiteRegistration* r) {
  return r != NULL && r->builtin_code == kTfLiteBuiltinCustom &&
         r->custom_name != NULL && strcmp(r->custom_name, CUSTOM_OP_NAME) == 0;
}

static TfLiteStatus delegate_prepare(TfLiteContext* context,
                                     TfLiteDelegate* delegate) {
  Standin* s = (Standin*)delegate;
  if (misbehave_at(s, STAGE_PREPARE)) {
    log_event("prepare refused");
    context->ReportError(context, "edgetpu stand-in: prepare refused "
                                  "(EDGETPU_STANDIN_MODE=refuse)");
    return kTfLiteError;
  }
  TfLiteIntArray* plan = NULL;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk) return kTfLiteError;

  TfLiteIntArray* claim = malloc(sizeof(TfLiteIntArray) +
                                 sizeof(int) * (size_t)(plan->size > 0 ? plan->size : 1));
  if (claim == NULL) return kTfLiteError;
  claim->size = 0;
  for (int i = 0; i < plan->size; i++) {
    TfLiteNode* node = NULL;
    TfLiteRegistration* reg = NULL;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk) {
      free(claim);
      return kTfLiteError;
    }
    if (is_edgetpu_op(reg)) claim->data[claim->size++] = plan->data[i];
  }
  log_event("prepare nodes=%d claimed=%d", plan->size, claim->size);

  /* One delegate kernel per edgetpu-custom-op node, as the real delegate
   * does (each node is its own TPU executable). */
  TfLiteRegistration kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.init = kernel_init;
  kernel.free = kernel_free;
  kernel.prepare = kernel_prepare;
  kernel.invoke = kernel_invoke;
  kernel.builtin_code = kTfLiteBuiltinCustom;
  kernel.custom_name = "EdgeTpuStandinDelegate";
  kernel.version = 1;
  TfLiteStatus status = kTfLiteOk;
  TfLiteIntArray* one = malloc(sizeof(TfLiteIntArray) + sizeof(int));
  if (one == NULL) status = kTfLiteError;
  for (int i = 0; i < claim->size && status == kTfLiteOk; i++) {
    one->size = 1;
    one->data[0] = claim->data[i];
    status = context->ReplaceNodeSubsetsWithDelegateKernels(context, kernel, one, delegate);
  }
  free(one);
  free(claim);
  return status;
}

static void report(void (*report_error)(const char*), const char* msg) {
  log_event("refused: %s", msg);
  if (report_error != NULL) report_error(msg);
}

static TfLiteDelegate* create(char** keys, char** values, size_t n,
                              void (*report_error)(const char*)) {
  /* Python's load_delegate declares num_options as c_int, not size_t: keep
   * only the low 32 bits in case the upper half of the register is junk. */
  n = (size_t)(uint32_t)n;
  Standin cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.mode = MODE_OK;
  cfg.stage = STAGE_CREATE;
  cfg.latency_us = 2500;
  cfg.copy_output = true;

  const char* mode = env_or("EDGETPU_STANDIN_MODE", "ok");
  if (!parse_mode(mode, &cfg.mode)) {
    report(report_error, "edgetpu stand-in: unknown EDGETPU_STANDIN_MODE");
    return NULL;
  }
  if (!parse_stage(env_or("EDGETPU_STANDIN_STAGE", "create"), &cfg.stage)) {
    report(report_error, "edgetpu stand-in: unknown EDGETPU_STANDIN_STAGE");
    return NULL;
  }
  const char* latency = env_or("EDGETPU_STANDIN_LATENCY_US", "2500");
  char* end = NULL;
  cfg.latency_us = strtol(latency, &end, 10);
  if (end == latency || *end != '\0' || cfg.latency_us < 0) {
    report(report_error, "edgetpu stand-in: bad EDGETPU_STANDIN_LATENCY_US");
    return NULL;
  }
  const char* output = env_or("EDGETPU_STANDIN_OUTPUT", "copy");
  if (strcmp(output, "copy") == 0) cfg.copy_output = true;
  else if (strcmp(output, "zeros") == 0) cfg.copy_output = false;
  else {
    report(report_error, "edgetpu stand-in: unknown EDGETPU_STANDIN_OUTPUT");
    return NULL;
  }

  char opts[512] = "";
  size_t used = 0;
  for (size_t i = 0; i < n && used < sizeof opts; i++) {
    int w = snprintf(opts + used, sizeof opts - used, " %s=%s",
                     keys && keys[i] ? keys[i] : "", values && values[i] ? values[i] : "");
    if (w < 0) break;
    used += (size_t)w;
  }
  log_event("create mode=%s stage=%s options=%zu%s", mode,
            env_or("EDGETPU_STANDIN_STAGE", "create"), n, opts);

  if (misbehave_at(&cfg, STAGE_CREATE)) {
    /* Like the real library with no usable device: NULL and no message, so
     * Python's load_delegate raises ValueError with only its own first line. */
    log_event("refused: no Edge TPU");
    return NULL;
  }

  Standin* s = malloc(sizeof *s);
  if (s == NULL) {
    report(report_error, "edgetpu stand-in: out of memory");
    return NULL;
  }
  *s = cfg;
  s->base.data_ = s;
  s->base.Prepare = delegate_prepare;
  /* As the real delegate: without this flag the interpreter first prepares
   * every node to look for dynamic tensors, and the still-unresolved
   * edgetpu-custom-op fails that before our Prepare runs. */
  s->base.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
  return &s->base;
}

static void destroy(TfLiteDelegate* delegate) {
  if (delegate == NULL) return;
  Standin* s = (Standin*)delegate;
  log_event("destroy invokes=%ld", s->invokes);
  free(s);
}

/* ---- exported: external-delegate plugin interface ----------------------- */

EXPORT TfLiteDelegate* tflite_plugin_create_delegate(
    char** options_keys, char** options_values, size_t num_options,
    void (*report_error)(const char*)) {
  return create(options_keys, options_values, num_options, report_error);
}

EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  destroy(delegate);
}

/* ---- exported: edgetpu_c.h ---------------------------------------------- */

enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };

struct edgetpu_device {
  enum edgetpu_device_type type;
  const char* path;
};

struct edgetpu_option {
  const char* name;
  const char* value;
};

EXPORT const char* edgetpu_version(void) {
  return env_or("EDGETPU_STANDIN_VERSION", DEFAULT_VERSION);
}

EXPORT void edgetpu_verbosity(int verbosity) { (void)verbosity; }

/* One allocation: the array, then the path strings it points into. */
EXPORT struct edgetpu_device* edgetpu_list_devices(size_t* num_devices) {
  const char* spec = getenv("EDGETPU_STANDIN_DEVICES");
  if (spec == NULL) spec = "usb:/sys/bus/usb/devices/2-1";
  size_t count = 0, len = strlen(spec);
  if (len > 0) {
    count = 1;
    for (const char* p = spec; *p; p++) count += (*p == ',');
  }
  *num_devices = 0;
  if (count == 0) return NULL;
  struct edgetpu_device* devs = malloc(count * sizeof *devs + len + 1);
  if (devs == NULL) return NULL;
  char* text = (char*)(devs + count);
  memcpy(text, spec, len + 1);
  size_t got = 0;
  for (char* item = strtok(text, ","); item != NULL; item = strtok(NULL, ",")) {
    char* colon = strchr(item, ':');
    const char* kind = item;
    const char* path = "";
    if (colon != NULL) {
      *colon = '\0';
      path = colon + 1;
    }
    devs[got].type = strcmp(kind, "pci") == 0 ? EDGETPU_APEX_PCI : EDGETPU_APEX_USB;
    devs[got].path = path;
    got++;
  }
  *num_devices = got;
  return devs;
}

EXPORT void edgetpu_free_devices(struct edgetpu_device* dev) { free(dev); }

EXPORT TfLiteDelegate* edgetpu_create_delegate(enum edgetpu_device_type type,
                                               const char* name,
                                               const struct edgetpu_option* options,
                                               size_t num_options) {
  (void)type;
  (void)name;
  char* keys[16];
  char* values[16];
  if (num_options > 16) num_options = 16;
  for (size_t i = 0; i < num_options; i++) {
    keys[i] = (char*)options[i].name;
    values[i] = (char*)options[i].value;
  }
  return create(keys, values, num_options, NULL);
}

EXPORT void edgetpu_free_delegate(TfLiteDelegate* delegate) { destroy(delegate); }
