// Model files and training checkpoints.
//
// A model file is a safetensors file holding one network's state_dict under
// the reference PyTorch model's names and shapes — parameters, running
// statistics and `num_batches_tracked` (int64 scalars) — so that
//   Generator().load_state_dict(safetensors.torch.load_file(path))
// works in the reference project. Its __metadata__ records the architecture
// (gannf.config as JSON, gannf.net, gannf.layout_hash) so that a mismatched
// file is refused with a message saying what differs.
//
// A checkpoint is a folder:  generator.safetensors, discriminator.safetensors,
// and state.safetensors (Adam moments and step counts of both nets, plus the
// trainer's counters as int64 tensors, and the settings as metadata; the noise
// of a sample is a function of (seed, epoch, position), so no RNG state is kept).
// Folders are written under a temporary name and renamed into place, every
// file fsync'ed, so a crash leaves the previous checkpoint intact.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "dcgan.h"
#include "safetensors.h"

namespace gannf {

// Writes `net`'s state_dict to `path` (atomically). `extra` goes into the metadata.
void save_model(const std::string& path, const Net<float>& net, const DcganConfig& cfg,
                const std::map<std::string, std::string>& extra = {});
// Loads a model file into `net`, checking names, shapes, dtypes and finiteness.
// Throws std::runtime_error naming the file and the first problem.
void load_model(const std::string& path, Net<float>& net);
// The DcganConfig recorded in a model file's metadata (throws if absent).
DcganConfig read_model_config(const std::string& path);

// Every file save_model writes carries per-tensor CRC-32C checksums in its
// metadata (safetensors.h, kStChecksumKey), checked on every load: a damaged
// file is refused naming the file and the tensor. A file without them (older
// gannf) loads with warn_if_unchecked's one-line warning.
void warn_if_unchecked(const SafeTensors& st);

// Tensors of a net's state_dict, as PyTorch orders and names them.
StEntries state_dict(const Net<float>& net);
// Loads tensors by name into `net` from an already-parsed file.
void load_state_dict(const SafeTensors& st, Net<float>& net);

}  // namespace gannf
