// Drives the tqexport TensorRT plugins the way TensorRT does, without TensorRT: dlopen libtqexport_trt.so,
// getCreators -> createPlugin(kBUILD) -> getOutputDataTypes / getOutputShapes (harness IExprBuilder) ->
// supportsFormatCombination -> configurePlugin -> getWorkspaceSize -> getAliasedInput -> getFieldsToSerialize ->
// createPlugin(kRUNTIME) -> attachToContext -> onShapeChange / enqueue on device buffers, for `steps` steps.
// The same case then runs through the launchers called directly (plugins/kernels/tq_kernels.h, params filled
// here from the spec), and through a clone of the build plugin with separate (non-aliased) outputs. All three
// must agree bit for bit; the outputs are written for the NumPy reference check (run_cases.py).
//
// Usage: tq_trt_harness <libtqexport_trt.so> <case dir>...   (case.txt format: see run_cases.py)
// Exit status 0 when every case ran and the three paths agree bit for bit.
#include <NvInferRuntime.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness_expr.h"
#include "kernels/tq_kernels.h"

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace {

#define CUDA_OK(call)                                                                                  \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

struct TypeInfo {
  const char* name;
  DataType type;
  size_t size;
};
const TypeInfo kTypes[] = {{"f32", DataType::kFLOAT, 4}, {"f16", DataType::kHALF, 2}, {"i8", DataType::kINT8, 1},
                           {"u8", DataType::kUINT8, 1},  {"i64", DataType::kINT64, 8}, {"bool", DataType::kBOOL, 1}};
const TypeInfo& type_info(const std::string& name) {
  for (const auto& t : kTypes)
    if (name == t.name) return t;
  throw std::runtime_error("unknown dtype " + name);
}
size_t type_size(DataType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i.size;
  throw std::runtime_error("unsized dtype");
}

int64_t volume(const Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}
std::string dims_str(const Dims& d) {
  std::ostringstream s;
  for (int i = 0; i < d.nbDims; ++i) s << (i ? "x" : "") << d.d[i];
  return s.str();
}

struct Input {
  std::string name;
  DataType type;
  Dims dims{};
  std::vector<char> host;  // steps * slice for input 0 when steps > 1
};

struct Case {
  std::string dir;
  std::string op;
  std::map<std::string, std::vector<int32_t>> int_fields;
  std::map<std::string, float> float_fields;
  std::vector<Input> inputs;
  int steps = 1;
};

std::vector<char> read_file(const std::string& path, size_t expect) {
  std::ifstream f(path, std::ios::binary);
  require(f.good(), "cannot open " + path);
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  require(data.size() == expect,
          path + ": " + std::to_string(data.size()) + " bytes, expected " + std::to_string(expect));
  return data;
}

void write_file(const std::string& path, const std::vector<char>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  require(f.good(), "cannot write " + path);
}

Case read_case(const std::string& dir) {
  Case c;
  c.dir = dir;
  std::ifstream f(dir + "/case.txt");
  require(f.good(), "cannot open " + dir + "/case.txt");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream s(line);
    std::string kw;
    if (!(s >> kw) || kw[0] == '#') continue;
    if (kw == "op") {
      s >> c.op;
    } else if (kw == "steps") {
      s >> c.steps;
    } else if (kw == "field") {
      std::string name, type;
      s >> name >> type;
      if (type == "f32") {
        float v;
        s >> v;
        c.float_fields[name] = v;
      } else {
        int32_t v;
        std::vector<int32_t> vals;
        while (s >> v) vals.push_back(v);
        c.int_fields[name] = vals;
      }
    } else if (kw == "input") {
      Input in;
      std::string type;
      int rank;
      s >> in.name >> type >> rank;
      in.type = type_info(type).type;
      in.dims.nbDims = rank;
      for (int i = 0; i < rank; ++i) s >> in.dims.d[i];
      std::string file;
      const size_t bytes = static_cast<size_t>(volume(in.dims)) * type_info(type).size;
      if (s >> file) {
        const size_t copies = c.inputs.empty() ? static_cast<size_t>(c.steps) : 1;
        in.host = read_file(dir + "/" + file, bytes * copies);
      } else {
        require(bytes == 0, "input " + in.name + " has elements but no file");
      }
      c.inputs.push_back(std::move(in));
    } else {
      throw std::runtime_error("case.txt: unknown keyword " + kw);
    }
  }
  return c;
}

// ------------------------------------------------------------------------------------------------ device state
struct DeviceBuffers {
  std::vector<void*> in;
  std::vector<void*> out;
  std::vector<size_t> out_bytes;
  void* workspace = nullptr;
  ~DeviceBuffers() {
    for (void* p : in) cudaFree(p);
    for (void* p : out) cudaFree(p);
    cudaFree(workspace);
  }
};

void* upload(const std::vector<char>& host, size_t bytes) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, bytes > 0 ? bytes : 16));
  if (bytes > 0) CUDA_OK(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice));
  return p;
}

std::vector<char> download(const void* p, size_t bytes) {
  std::vector<char> h(bytes);
  if (bytes > 0) CUDA_OK(cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost));
  return h;
}

size_t slice_bytes(const Input& in) { return static_cast<size_t>(volume(in.dims)) * type_size(in.type); }

// Uploads the inputs; input 0 holds all steps' slices.
void upload_inputs(const Case& c, DeviceBuffers& buf) {
  for (size_t i = 0; i < c.inputs.size(); ++i) buf.in.push_back(upload(c.inputs[i].host, c.inputs[i].host.size()));
}

// Advances past_lengths (the last input, int64 [B]) on the device by S after a buffer-mode step.
void advance_lengths(const Case& c, DeviceBuffers& buf, int index, int64_t s) {
  std::vector<char> h = download(buf.in[index], slice_bytes(c.inputs[index]));
  int64_t* v = reinterpret_cast<int64_t*>(h.data());
  for (int64_t b = 0; b < c.inputs[index].dims.d[0]; ++b) v[b] += s;
  CUDA_OK(cudaMemcpy(buf.in[index], h.data(), h.size(), cudaMemcpyHostToDevice));
}

// ------------------------------------------------------------------------------------------------ plugin path
struct Library {
  void* handle = nullptr;
  nvinfer1::IPluginCreatorInterface* const* creators = nullptr;
  int32_t count = 0;
};

Library load_library(const std::string& path) {
  Library lib;
  lib.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib.handle == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);
  using GetLegacy = nvinfer1::IPluginCreator* const* (*)(int32_t&);
  using SetFinder = void (*)(nvinfer1::ILoggerFinder*);
  auto get = reinterpret_cast<GetCreators>(dlsym(lib.handle, "getCreators"));
  auto legacy = reinterpret_cast<GetLegacy>(dlsym(lib.handle, "getPluginCreators"));
  auto finder = reinterpret_cast<SetFinder>(dlsym(lib.handle, "setLoggerFinder"));
  require(get != nullptr && legacy != nullptr && finder != nullptr,
          "library lacks getCreators/getPluginCreators/setLoggerFinder");
  finder(nullptr);
  int32_t n_legacy = -1;
  legacy(n_legacy);
  require(n_legacy == 0, "getPluginCreators should list no V2 creators");
  lib.creators = get(lib.count);
  require(lib.creators != nullptr && lib.count == 2, "getCreators should list 2 creators");
  return lib;
}

nvinfer1::IPluginCreatorV3One* find_creator(const Library& lib, const std::string& op) {
  for (int32_t i = 0; i < lib.count; ++i) {
    nvinfer1::InterfaceInfo info = lib.creators[i]->getInterfaceInfo();
    require(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is not IPluginCreatorV3One");
    auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(lib.creators[i]);
    if (op == c->getPluginName()) {
      require(std::strcmp(c->getPluginVersion(), "1") == 0, "plugin version must be 1");
      require(std::strcmp(c->getPluginNamespace(), "tqexport") == 0, "plugin namespace must be tqexport");
      return c;
    }
  }
  throw std::runtime_error("no creator for " + op);
}

struct Fields {
  std::vector<PluginField> fields;
  PluginFieldCollection fc{};
};

Fields make_fields(const Case& c) {
  Fields f;
  for (const auto& [name, vals] : c.int_fields)
    f.fields.emplace_back(name.c_str(), vals.data(), PluginFieldType::kINT32, static_cast<int32_t>(vals.size()));
  for (const auto& [name, val] : c.float_fields) f.fields.emplace_back(name.c_str(), &val, PluginFieldType::kFLOAT32, 1);
  f.fc.nbFields = static_cast<int32_t>(f.fields.size());
  f.fc.fields = f.fields.data();
  return f;
}

struct Caps {
  nvinfer1::IPluginV3OneCore* core;
  nvinfer1::IPluginV3OneBuild* build;
  nvinfer1::IPluginV3OneBuildV2* build_v2;  // null unless the build interface is version 2
  nvinfer1::IPluginV3OneRuntime* runtime;
};

Caps caps(nvinfer1::IPluginV3* p) {
  Caps c{};
  c.core = static_cast<nvinfer1::IPluginV3OneCore*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
  auto* b = p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD);
  c.build = static_cast<nvinfer1::IPluginV3OneBuild*>(b);
  if (b != nullptr && b->getInterfaceInfo().major == 2) c.build_v2 = static_cast<nvinfer1::IPluginV3OneBuildV2*>(b);
  c.runtime =
      static_cast<nvinfer1::IPluginV3OneRuntime*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  require(c.core && c.build && c.runtime, "plugin lacks a capability interface");
  return c;
}

struct BuildResult {
  std::vector<DataType> out_types;
  std::vector<Dims> out_dims;
  size_t workspace = 0;
  std::vector<int> aliased;  // per output: aliased input index or -1
};

// Build phase as TensorRT's builder runs it. Prints what it sees.
BuildResult build_phase(const Case& c, nvinfer1::IPluginV3* plugin) {
  Caps k = caps(plugin);
  require(c.op == k.core->getPluginName(), "core name mismatch");
  BuildResult r;
  const int nin = static_cast<int>(c.inputs.size());
  const int nout = k.build->getNbOutputs();
  std::vector<DataType> in_types;
  for (const auto& in : c.inputs) in_types.push_back(in.type);
  r.out_types.resize(nout);
  require(k.build->getOutputDataTypes(r.out_types.data(), nout, in_types.data(), nin) == 0, "getOutputDataTypes");

  tq::harness::ExprBuilder eb;
  std::vector<DimsExprs> in_exprs(nin);
  for (int i = 0; i < nin; ++i) {
    in_exprs[i].nbDims = c.inputs[i].dims.nbDims;
    for (int a = 0; a < c.inputs[i].dims.nbDims; ++a) in_exprs[i].d[a] = eb.input_dim(c.inputs[i].dims.d[a]);
  }
  std::vector<DimsExprs> out_exprs(nout);
  require(k.build->getOutputShapes(in_exprs.data(), nin, nullptr, 0, out_exprs.data(), nout, eb) == 0,
          "getOutputShapes");
  for (int o = 0; o < nout; ++o) {
    Dims d{};
    d.nbDims = out_exprs[o].nbDims;
    for (int a = 0; a < d.nbDims; ++a) d.d[a] = tq::harness::ExprBuilder::eval(out_exprs[o].d[a]);
    r.out_dims.push_back(d);
    std::printf("  output %d: %s dtype %d\n", o, dims_str(d).c_str(), static_cast<int>(r.out_types[o]));
  }

  // supportsFormatCombination: every position accepts the case's types (decided left to right), and rejects
  // a type the contract forbids (int32 anywhere but nowhere in our I/O).
  std::vector<DynamicPluginTensorDesc> io(nin + nout);
  for (int i = 0; i < nin + nout; ++i) {
    PluginTensorDesc& d = io[i].desc;
    d.dims = i < nin ? c.inputs[i].dims : r.out_dims[i - nin];
    d.type = i < nin ? c.inputs[i].type : r.out_types[i - nin];
    d.format = nvinfer1::TensorFormat::kLINEAR;
    d.scale = -1.0f;
    io[i].min = io[i].opt = io[i].max = d.dims;
  }
  for (int pos = 0; pos < nin + nout; ++pos) {
    require(k.build->supportsFormatCombination(pos, io.data(), nin, nout),
            "supportsFormatCombination rejects the case's type at position " + std::to_string(pos));
    const DataType saved = io[pos].desc.type;
    io[pos].desc.type = DataType::kINT32;
    require(!k.build->supportsFormatCombination(pos, io.data(), nin, nout),
            "supportsFormatCombination accepts int32 at position " + std::to_string(pos));
    io[pos].desc.type = saved;
    io[pos].desc.format = nvinfer1::TensorFormat::kCHW32;
    require(!k.build->supportsFormatCombination(pos, io.data(), nin, nout), "non-linear format accepted");
    io[pos].desc.format = nvinfer1::TensorFormat::kLINEAR;
  }

  // configurePlugin twice: with wildcard (-1) token dims like a dynamic profile, then concrete.
  std::vector<DynamicPluginTensorDesc> wild = io;
  for (auto& t : wild)
    if (t.desc.dims.nbDims == 4) t.desc.dims.d[2] = -1;
  require(k.build->configurePlugin(wild.data(), nin, wild.data() + nin, nout) == 0, "configurePlugin (wildcards)");
  require(k.build->configurePlugin(io.data(), nin, io.data() + nin, nout) == 0, "configurePlugin");
  r.workspace = k.build->getWorkspaceSize(io.data(), nin, io.data() + nin, nout);
  for (int o = 0; o < nout; ++o) r.aliased.push_back(k.build_v2 != nullptr ? k.build_v2->getAliasedInput(o) : -1);
  std::printf("  workspace %zu bytes, build interface v%d, aliased:", r.workspace, k.build_v2 ? 2 : 1);
  for (int a : r.aliased) std::printf(" %d", a);
  std::printf("\n");
  return r;
}

// Runtime phase: onShapeChange + enqueue for every step. `alias` honours getAliasedInput (outputs share the
// aliased input's buffer, as TensorRT does); otherwise outputs get their own buffers.
// With `time_iters` > 0 it then times the last step's enqueue (after reading the outputs back): 20 warm-up calls,
// then 5 rounds of time_iters back-to-back enqueues between CUDA events (host launch work and GPU time together),
// and 5 replays of a CUDA graph of time_iters enqueues (GPU time); prints both medians per enqueue.
std::vector<std::vector<char>> run_runtime(const Case& c, nvinfer1::IPluginV3* plugin, const BuildResult& br,
                                           bool alias, int time_iters = 0) {
  Caps k = caps(plugin);
  const int nin = static_cast<int>(c.inputs.size());
  const int nout = static_cast<int>(br.out_dims.size());
  DeviceBuffers buf;
  upload_inputs(c, buf);
  CUDA_OK(cudaMalloc(&buf.workspace, br.workspace > 0 ? br.workspace : 16));
  std::vector<void*> outs(nout);
  for (int o = 0; o < nout; ++o) {
    const size_t bytes = static_cast<size_t>(volume(br.out_dims[o])) * type_size(br.out_types[o]);
    buf.out_bytes.push_back(bytes);
    if (alias && br.aliased[o] >= 0) {
      outs[o] = buf.in[br.aliased[o]];
      buf.out.push_back(nullptr);
    } else {
      void* p = nullptr;
      CUDA_OK(cudaMalloc(&p, bytes > 0 ? bytes : 16));
      CUDA_OK(cudaMemset(p, 0xAB, bytes));  // poison: every byte must be written
      buf.out.push_back(p);
      outs[o] = p;
    }
  }
  std::vector<PluginTensorDesc> in_desc(nin), out_desc(nout);
  for (int i = 0; i < nin; ++i) in_desc[i] = {c.inputs[i].dims, c.inputs[i].type, nvinfer1::TensorFormat::kLINEAR, -1.f};
  for (int o = 0; o < nout; ++o) out_desc[o] = {br.out_dims[o], br.out_types[o], nvinfer1::TensorFormat::kLINEAR, -1.f};
  require(k.runtime->onShapeChange(in_desc.data(), nin, out_desc.data(), nout) == 0, "onShapeChange");
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  const size_t x_slice = slice_bytes(c.inputs[0]);
  const bool buffer_mode = c.int_fields.count("cache_mode") && c.int_fields.at("cache_mode")[0] == 1;
  for (int step = 0; step < c.steps; ++step) {
    std::vector<const void*> ins(buf.in.begin(), buf.in.end());
    ins[0] = static_cast<const char*>(buf.in[0]) + step * x_slice;
    require(k.runtime->enqueue(in_desc.data(), out_desc.data(), ins.data(), outs.data(), buf.workspace, stream) == 0,
            "enqueue step " + std::to_string(step));
    CUDA_OK(cudaStreamSynchronize(stream));
    if (buffer_mode && c.op == "TQQuantize" && step + 1 < c.steps) {
      require(alias, "multi-step buffer runs need aliased outputs");
      advance_lengths(c, buf, nin - 1, c.inputs[0].dims.d[2]);
    }
  }
  std::vector<std::vector<char>> result;
  for (int o = 0; o < nout; ++o) result.push_back(download(outs[o], buf.out_bytes[o]));
  // Timing comes after the outputs are read back: repeated in-place steps (buffer mode with a window) are not
  // idempotent, so the timed calls may change the buffers.
  if (time_iters > 0) {
    std::vector<const void*> ins(buf.in.begin(), buf.in.end());
    ins[0] = static_cast<const char*>(buf.in[0]) + (c.steps - 1) * x_slice;
    auto enqueue = [&] {
      require(k.runtime->enqueue(in_desc.data(), out_desc.data(), ins.data(), outs.data(), buf.workspace, stream) == 0,
              "timed enqueue");
    };
    for (int i = 0; i < 20; ++i) enqueue();
    cudaEvent_t start, stop;
    CUDA_OK(cudaEventCreate(&start));
    CUDA_OK(cudaEventCreate(&stop));
    // rounds of time_iters calls timed between events: back to back on the stream, then as one CUDA graph
    // of time_iters enqueues (what an execution context run with CUDA graphs replays: GPU time only).
    auto median_us = [&](auto&& body) {
      std::vector<float> us;
      for (int round = 0; round < 5; ++round) {
        CUDA_OK(cudaEventRecord(start, stream));
        body();
        CUDA_OK(cudaEventRecord(stop, stream));
        CUDA_OK(cudaEventSynchronize(stop));
        float ms = 0.0f;
        CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
        us.push_back(1000.0f * ms / static_cast<float>(time_iters));
      }
      std::sort(us.begin(), us.end());
      return us[2];
    };
    const float stream_us = median_us([&] {
      for (int i = 0; i < time_iters; ++i) enqueue();
    });
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::string graph_note;
    float graph_us = -1.0f;
    try {  // a failed capture is reported, not fatal: the stream timing above stands on its own
      CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        for (int i = 0; i < time_iters; ++i) enqueue();
      } catch (...) {
        cudaStreamEndCapture(stream, &graph);
        throw;
      }
      CUDA_OK(cudaStreamEndCapture(stream, &graph));
      CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
      CUDA_OK(cudaGraphLaunch(exec, stream));  // warm-up
      graph_us = median_us([&] { CUDA_OK(cudaGraphLaunch(exec, stream)); });
    } catch (const std::exception& e) {
      graph_note = std::string(" (CUDA graph capture failed: ") + e.what() + ")";
      (void)cudaGetLastError();
    }
    std::printf("  time: %.2f us per enqueue on the stream, %.2f us in a CUDA graph (medians of 5 rounds of %d)%s\n",
                stream_us, graph_us, time_iters, graph_note.c_str());
    if (exec != nullptr) CUDA_OK(cudaGraphExecDestroy(exec));
    if (graph != nullptr) CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaEventDestroy(start));
    CUDA_OK(cudaEventDestroy(stop));
  }
  CUDA_OK(cudaStreamDestroy(stream));
  return result;
}

// ------------------------------------------------------------------------------------------------ direct path
int field(const Case& c, const std::string& name, int fallback) {
  auto it = c.int_fields.find(name);
  return it == c.int_fields.end() ? fallback : it->second[0];
}

tq::CodecConfig codec_from(const Case& c, const std::string& prefix, bool qjl, int head_dim) {
  tq::CodecConfig cfg;
  const auto& bits = c.int_fields.at(prefix + "bits");
  const auto& parts = c.int_fields.at(prefix + "part_sizes");
  cfg.num_parts = static_cast<int>(bits.size());
  for (int p = 0; p < cfg.num_parts; ++p) {
    cfg.bits[p] = bits[p];
    cfg.part_sizes[p] = parts[p];
  }
  cfg.head_dim = head_dim;
  cfg.qjl = qjl ? field(c, prefix + "qjl", 0) : 0;
  cfg.norm_correction = prefix.empty() ? field(c, "norm_correction", 0) : 0;
  cfg.rotation_kind = field(c, "rotation_kind", 1);
  return cfg;
}

std::vector<std::vector<char>> run_direct(const Case& c, const BuildResult& br) {
  const int nout = static_cast<int>(br.out_dims.size());
  DeviceBuffers buf;
  upload_inputs(c, buf);
  const auto dptr = [&](int i) -> void* {
    return i < static_cast<int>(c.inputs.size()) && volume(c.inputs[i].dims) > 0 ? buf.in[i] : nullptr;
  };
  const int w = field(c, "sink_tokens", 0) + field(c, "recent_window", 0);
  const int mode = field(c, "cache_mode", 0);
  const Input& x = c.inputs[0];
  std::vector<void*> outs(nout);
  if (c.op == "TQQuantize") {
    tq::kernels::QuantizeParams p;
    p.codec = codec_from(c, "", true, static_cast<int>(x.dims.d[3]));
    p.dtype = x.type == DataType::kHALF ? tq::kernels::DType::kFloat16 : tq::kernels::DType::kFloat32;
    p.batch = static_cast<int>(x.dims.d[0]);
    p.kv_heads = static_cast<int>(x.dims.d[1]);
    p.new_tokens = static_cast<int>(x.dims.d[2]);
    p.past_rows = c.inputs[1].dims.d[2];
    p.past_cache = static_cast<const uint8_t*>(dptr(1));
    p.rotation = static_cast<const float*>(dptr(2));
    p.rotation_heads = static_cast<int>(c.inputs[2].dims.d[0]);
    p.codebook = static_cast<const float*>(dptr(3));
    p.qjl_matrix = p.codec.qjl ? static_cast<const float*>(dptr(4)) : nullptr;
    p.cache_mode = mode;
    p.sink_tokens = field(c, "sink_tokens", 0);
    p.recent_window = field(c, "recent_window", 0);
    p.rotation_hadamard = field(c, "constant_hadamard", 0);  // the plugin's promises (docs/format.md 8.3)
    p.constant_tables = field(c, "constant_hadamard", 0);
    if (w > 0) {
      p.past_window = dptr(5);
      p.past_window_rows = c.inputs[5].dims.d[2];
    }
    if (mode == 1) {
      p.past_lengths = static_cast<const int64_t*>(dptr(6));
      p.present_cache = static_cast<uint8_t*>(buf.in[1]);  // in place
      p.present_rows = p.past_rows;
      outs[0] = buf.in[1];
      if (w > 0) {
        p.present_window = buf.in[5];
        p.present_window_rows = w;
        outs[1] = buf.in[5];
      }
    } else {
      const int64_t t_new = p.past_rows + p.past_window_rows + p.new_tokens;
      const int64_t wd = t_new < w ? t_new : w;
      p.present_rows = t_new - wd;
      p.present_window_rows = w > 0 ? wd : 0;
      for (int o = 0; o < nout; ++o) {
        CUDA_OK(cudaMalloc(&outs[o], volume(br.out_dims[o]) * type_size(br.out_types[o]) + 16));
        buf.out.push_back(outs[o]);
      }
      p.present_cache = static_cast<uint8_t*>(outs[0]);
      if (w > 0) p.present_window = outs[1];
    }
    CUDA_OK(cudaMalloc(&buf.workspace, tq::kernels::quantize_workspace_bytes(p) + 16));
    const size_t x_slice = slice_bytes(x);
    for (int step = 0; step < c.steps; ++step) {
      p.x = static_cast<const char*>(buf.in[0]) + step * x_slice;
      const cudaError_t e = tq::kernels::launch_quantize(p, buf.workspace, nullptr);
      require(e == cudaSuccess, std::string("launch_quantize: ") + tq::kernels::last_error_message());
      CUDA_OK(cudaDeviceSynchronize());
      if (mode == 1 && step + 1 < c.steps) advance_lengths(c, buf, 6, p.new_tokens);
    }
  } else {
    tq::kernels::AttentionParams p;
    const int d = static_cast<int>(x.dims.d[3]);
    p.k_codec = codec_from(c, "k_", true, d);
    p.v_codec = codec_from(c, "v_", false, d);
    p.dtype = x.type == DataType::kHALF ? tq::kernels::DType::kFloat16 : tq::kernels::DType::kFloat32;
    p.batch = static_cast<int>(x.dims.d[0]);
    p.q_heads = static_cast<int>(x.dims.d[1]);
    p.new_tokens = static_cast<int>(x.dims.d[2]);
    p.kv_heads = static_cast<int>(c.inputs[1].dims.d[1]);
    p.q = dptr(0);
    p.k_cache = static_cast<const uint8_t*>(dptr(1));
    p.v_cache = static_cast<const uint8_t*>(dptr(2));
    p.cache_rows = c.inputs[1].dims.d[2];
    const Input& m = c.inputs[3];
    p.mask = dptr(3);
    p.mask_type = m.type == DataType::kBOOL   ? tq::kernels::MaskType::kBool
                  : m.type == DataType::kHALF ? tq::kernels::MaskType::kFloat16
                                              : tq::kernels::MaskType::kFloat32;
    p.mask_batch = static_cast<int>(m.dims.d[0]);
    p.mask_heads = static_cast<int>(m.dims.d[1]);
    p.mask_tokens = m.dims.d[3];
    p.k_rotation = static_cast<const float*>(dptr(4));
    p.k_rotation_heads = static_cast<int>(c.inputs[4].dims.d[0]);
    p.k_codebook = static_cast<const float*>(dptr(5));
    p.v_rotation = static_cast<const float*>(dptr(6));
    p.v_rotation_heads = static_cast<int>(c.inputs[6].dims.d[0]);
    p.v_codebook = static_cast<const float*>(dptr(7));
    p.k_qjl_matrix = p.k_codec.qjl ? static_cast<const float*>(dptr(8)) : nullptr;
    if (w > 0) {
      p.k_window = dptr(9);
      p.v_window = dptr(10);
      p.window_rows = c.inputs[9].dims.d[2];
    }
    if (mode == 1) p.past_lengths = static_cast<const int64_t*>(dptr(11));
    auto it = c.float_fields.find("softcap");
    p.scale = c.float_fields.at("scale");
    p.softcap = it == c.float_fields.end() ? 0.0f : it->second;
    p.cache_mode = mode;
    p.sink_tokens = field(c, "sink_tokens", 0);
    p.recent_window = field(c, "recent_window", 0);
    p.k_rotation_hadamard = field(c, "k_constant_hadamard", 0);
    p.v_rotation_hadamard = field(c, "v_constant_hadamard", 0);
    CUDA_OK(cudaMalloc(&outs[0], volume(br.out_dims[0]) * type_size(br.out_types[0]) + 16));
    buf.out.push_back(outs[0]);
    p.out = outs[0];
    CUDA_OK(cudaMalloc(&buf.workspace, tq::kernels::attention_workspace_bytes(p) + 16));
    const cudaError_t e = tq::kernels::launch_attention(p, buf.workspace, nullptr);
    require(e == cudaSuccess, std::string("launch_attention: ") + tq::kernels::last_error_message());
    CUDA_OK(cudaDeviceSynchronize());
  }
  std::vector<std::vector<char>> result;
  for (int o = 0; o < nout; ++o)
    result.push_back(download(outs[o], static_cast<size_t>(volume(br.out_dims[o])) * type_size(br.out_types[o])));
  return result;
}

// ------------------------------------------------------------------------------------------------ one case
bool run_case(const Library& lib, const std::string& dir) {
  const Case c = read_case(dir);
  std::printf("case %s: %s, %zu inputs, %d step(s)\n", dir.c_str(), c.op.c_str(), c.inputs.size(), c.steps);
  nvinfer1::IPluginCreatorV3One* creator = find_creator(lib, c.op);
  Fields f = make_fields(c);
  nvinfer1::IPluginV3* built = creator->createPlugin("harness", &f.fc, nvinfer1::TensorRTPhase::kBUILD);
  require(built != nullptr, "createPlugin(kBUILD) failed");
  const BuildResult br = build_phase(c, built);

  // Engine serialization: the build plugin's fields re-create the runtime plugin (kRUNTIME), which TensorRT then
  // attaches to an execution context (a clone).
  const PluginFieldCollection* ser = caps(built).runtime->getFieldsToSerialize();
  require(ser != nullptr && ser->nbFields > 0, "getFieldsToSerialize");
  nvinfer1::IPluginV3* restored = creator->createPlugin("harness", ser, nvinfer1::TensorRTPhase::kRUNTIME);
  require(restored != nullptr, "createPlugin(kRUNTIME) from the serialized fields failed");
  const PluginFieldCollection* ser2 = caps(restored).runtime->getFieldsToSerialize();
  require(ser2->nbFields == ser->nbFields, "serialized field count changed across a round trip");
  nvinfer1::IPluginV3* context_plugin = caps(restored).runtime->attachToContext(nullptr);
  require(context_plugin != nullptr, "attachToContext");
  // configure the restored plugin like TensorRT does before execution (onShapeChange happens in run_runtime).
  const char* time_env = std::getenv("TQ_HARNESS_TIME_ITERS");
  const int time_iters = time_env != nullptr ? std::atoi(time_env) : 0;
  const auto plugin_out = run_runtime(c, context_plugin, br, /*alias=*/true, time_iters);

  nvinfer1::IPluginV3* cloned = built->clone();
  require(cloned != nullptr, "clone");
  const bool buffer_mode = field(c, "cache_mode", 0) == 1;
  const auto clone_out = run_runtime(c, cloned, br, /*alias=*/!(c.steps == 1 && buffer_mode));
  const auto direct_out = run_direct(c, br);

  bool ok = true;
  for (size_t o = 0; o < plugin_out.size(); ++o) {
    const bool same_direct = plugin_out[o] == direct_out[o];
    const bool same_clone = plugin_out[o] == clone_out[o];
    std::printf("  output %zu: %zu bytes, plugin == direct launcher: %s, plugin == clone%s: %s\n", o,
                plugin_out[o].size(), same_direct ? "IDENTICAL" : "DIFFERENT",
                (c.steps == 1 && buffer_mode) ? " (non-aliased outputs)" : "", same_clone ? "IDENTICAL" : "DIFFERENT");
    ok = ok && same_direct && same_clone;
    write_file(dir + "/plugin_out" + std::to_string(o) + ".bin", plugin_out[o]);
    write_file(dir + "/direct_out" + std::to_string(o) + ".bin", direct_out[o]);
  }
  {
    std::ofstream shapes(dir + "/outputs.txt");
    for (size_t o = 0; o < br.out_dims.size(); ++o)
      shapes << o << " " << static_cast<int>(br.out_types[o]) << " " << dims_str(br.out_dims[o]) << "\n";
  }
  delete cloned;
  delete context_plugin;
  delete restored;
  delete built;
  return ok;
}

// Negative checks: createPlugin must refuse bad fields with a logged reason and nullptr, never abort.
bool run_negative(const Library& lib) {
  struct Bad {
    const char* op;
    const char* why;
    std::vector<std::pair<std::string, std::vector<int32_t>>> ints;
    float scale;
  };
  const std::vector<Bad> bad = {
      {"TQQuantize", "bits out of range", {{"bits", {9}}, {"part_sizes", {128}}}, 0},
      {"TQQuantize", "part size not a multiple of 16", {{"bits", {4}}, {"part_sizes", {120}}}, 0},
      {"TQQuantize", "len(bits) != len(part_sizes)", {{"bits", {4, 2}}, {"part_sizes", {128}}}, 0},
      {"TQQuantize", "qjl with 1 bit", {{"bits", {1}}, {"part_sizes", {128}}, {"qjl", {1}}}, 0},
      {"TQQuantize", "cache_mode 2", {{"bits", {4}}, {"part_sizes", {128}}, {"cache_mode", {2}}}, 0},
      {"TQQuantize", "format_version 2", {{"bits", {4}}, {"part_sizes", {128}}, {"format_version", {2}}}, 0},
      {"TQQuantize", "missing bits", {{"part_sizes", {128}}}, 0},
      {"TQQuantize", "constant_hadamard 2", {{"bits", {4}}, {"part_sizes", {128}}, {"constant_hadamard", {2}}}, 0},
      {"TQQuantize", "constant_hadamard with two parts",
       {{"bits", {4, 3}}, {"part_sizes", {64, 64}}, {"constant_hadamard", {1}}}, 0},
      {"TQAttention", "v_constant_hadamard with two parts",
       {{"k_bits", {4}}, {"k_part_sizes", {128}}, {"v_bits", {4, 3}}, {"v_part_sizes", {64, 64}},
        {"v_constant_hadamard", {1}}}, 1.0f},
      {"TQAttention", "missing scale",
       {{"k_bits", {4}}, {"k_part_sizes", {128}}, {"v_bits", {4}}, {"v_part_sizes", {128}}}, 0},
      {"TQAttention", "K and V head dims differ",
       {{"k_bits", {4}}, {"k_part_sizes", {128}}, {"v_bits", {4}}, {"v_part_sizes", {64}}}, 1.0f},
  };
  bool ok = true;
  for (const Bad& b : bad) {
    std::vector<PluginField> fields;
    for (const auto& [name, vals] : b.ints)
      fields.emplace_back(name.c_str(), vals.data(), PluginFieldType::kINT32, static_cast<int32_t>(vals.size()));
    if (b.scale != 0) fields.emplace_back("scale", &b.scale, PluginFieldType::kFLOAT32, 1);
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    nvinfer1::IPluginV3* p = find_creator(lib, b.op)->createPlugin("neg", &fc, nvinfer1::TensorRTPhase::kBUILD);
    std::printf("negative %s (%s): %s\n", b.op, b.why, p == nullptr ? "refused" : "ACCEPTED");
    ok = ok && p == nullptr;
    delete p;
  }
  // A field of the wrong type (float for an int attribute).
  const float f = 4.0f;
  const int32_t parts = 128;
  PluginField wrong[] = {PluginField("bits", &f, PluginFieldType::kFLOAT32, 1),
                         PluginField("part_sizes", &parts, PluginFieldType::kINT32, 1)};
  PluginFieldCollection fc{2, wrong};
  nvinfer1::IPluginV3* p = find_creator(lib, "TQQuantize")->createPlugin("neg", &fc, nvinfer1::TensorRTPhase::kBUILD);
  std::printf("negative TQQuantize (bits as kFLOAT32): %s\n", p == nullptr ? "refused" : "ACCEPTED");
  ok = ok && p == nullptr;
  delete p;
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <libtqexport_trt.so> <case dir>...\n", argv[0]);
    return 2;
  }
  bool ok = true;
  try {
    const Library lib = load_library(argv[1]);
    ok = run_negative(lib);
    for (int i = 2; i < argc; ++i) {
      try {
        ok = run_case(lib, argv[i]) && ok;
      } catch (const std::exception& e) {
        std::printf("case %s: FAILED: %s\n", argv[i], e.what());
        ok = false;
      }
    }
  } catch (const std::exception& e) {
    std::printf("harness: FAILED: %s\n", e.what());
    return 1;
  }
  std::printf("harness: %s\n", ok ? "ALL IDENTICAL" : "MISMATCH OR FAILURE");
  return ok ? 0 : 1;
}
