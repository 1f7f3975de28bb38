// gannf-generate: pictures from a checkpoint, and a folder ready for the Hub.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "atomic_file.h"
#include "format.h"
#include "generator_py.h"
#include "blas_runtime.h"
#include "checkpoint.h"
#include "cli.h"
#include "picture.h"
#include "rng.h"
#include "run_outputs.h"
#ifdef GANNF_HAVE_PQ
#include "pg.h"
#endif

namespace fs = std::filesystem;
using namespace gannf;

namespace {

const char* kUsage =
    "usage: gannf-generate COMMAND --checkpoint PATH [options]\n"
    "PATH is a checkpoint folder (…/checkpoints/step-N), an output folder (its latest\n"
    "checkpoint is used) or a generator .safetensors file. Sampling uses eval mode.\n\n"
    "commands:\n"
    "  grid         one PNG grid, an image per seed          (--seeds, --cols, --out)\n"
    "  images       one PNG per seed                         (--seeds, --out)\n"
    "  interpolate  a strip from seed A to seed B            (--from, --to, --steps, --out)\n"
    "  dump         noise and images as safetensors, for checking against PyTorch\n"
    "  export       a folder ready for `hf upload`: weights, generator.py, model card (--out;\n"
    "               --contributors FILE or --db CONNINFO credit the class, --license ID)\n\n"
    "seeds: a list and ranges, e.g. 0-63 or 1,5,9-12. Seed s always gives the same z.";

std::vector<uint64_t> parse_seeds(const std::string& s) {
  std::vector<uint64_t> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    unsigned long long a = 0, b = 0;
    char extra;
    if (std::sscanf(part.c_str(), "%llu-%llu%c", &a, &b, &extra) == 2) {
      if (b < a || b - a > 100000) throw cli::Error("--seeds: bad range '" + part + "'");
      for (auto x = a; x <= b; x++) out.push_back(x);
    } else if (std::sscanf(part.c_str(), "%llu%c", &a, &extra) == 1) {
      out.push_back(a);
    } else {
      throw cli::Error("--seeds: '" + part + "' is not a seed or a range like 0-63");
    }
  }
  if (out.empty()) throw cli::Error("--seeds: no seeds given");
  return out;
}

struct Model {
  DcganConfig cfg;
  std::unique_ptr<Backend<float>> be;
  std::unique_ptr<Net<float>> G;
  std::string file;
  Model(const std::string& path, const std::string& backend) {
    file = generator_file(path);
    cfg = read_model_config(file);
    be = make_backend<float>(backend);
    G = std::make_unique<Net<float>>(*be, "generator");
    build_generator(*G, cfg, 64);
    load_model(file, *G);
  }
  std::vector<float> noise(uint64_t seed) const {
    std::vector<float> z(cfg.nz);
    Rng(seed).fill_normal(z.data(), z.size());
    return z;
  }
  // z: (n, nz) -> images (n, nc, S, S), eval mode, in chunks of 64
  std::vector<float> generate(const std::vector<float>& z) {
    const size_t n = z.size() / cfg.nz, per = G->out_size();
    std::vector<float> img(n * per);
    Buffer<float> zd(*be, (size_t)64 * cfg.nz);
    for (size_t b0 = 0; b0 < n; b0 += 64) {
      const int k = (int)std::min<size_t>(64, n - b0);
      be->upload(zd.data(), z.data() + b0 * cfg.nz, (size_t)k * cfg.nz);
      const float* y = G->forward(zd.data(), k, Mode::Eval);
      be->download(img.data() + b0 * per, y, (size_t)k * per);
    }
    return img;
  }
};


// What the model card credits: the class's logins with their accepted units
// and images (the leaderboard), from --db or a contributors.csv.
struct Contributor {
  std::string login;
  int64_t units = 0, images = 0;
};

// A markdown table cell: no '|', '<' or control characters from a name.
std::string md_cell(const std::string& s) {
  std::string r;
  for (unsigned char ch : s)
    if (ch >= 0x20 && ch != 0x7f && ch != '|' && ch != '<' && ch != '>') r += (char)ch;
  return r.empty() ? "?" : r;
}

// login[,units[,images]] per line; a header line starting with "login" and
// blank or # lines are skipped.
std::vector<Contributor> read_contributors(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot read the contributors");
  std::vector<Contributor> out;
  int line = 0;
  for (std::string l; std::getline(f, l);) {
    ++line;
    if (!l.empty() && l.back() == '\r') l.pop_back();
    if (l.empty() || l[0] == '#' || (line == 1 && l.rfind("login", 0) == 0)) continue;
    std::stringstream ss(l);
    std::vector<std::string> fields;
    for (std::string x; std::getline(ss, x, ',');) fields.push_back(x);
    Contributor c;
    c.login = fields[0];
    try {
      if (fields.size() > 1) c.units = std::stoll(fields[1]);
      if (fields.size() > 2) c.images = std::stoll(fields[2]);
    } catch (const std::exception&) {
      throw std::runtime_error(path + ":" + std::to_string(line) + ": expected login,units,images");
    }
    out.push_back(c);
  }
  return out;
}

#ifdef GANNF_HAVE_PQ
std::vector<Contributor> contributors_from_db(const std::string& conninfo) {
  pg::Connection c(conninfo);
  pg::Result r = c.exec(
      "SELECT login::text, sum(units)::bigint, sum(images)::bigint FROM gannf.leaderboard "
      "GROUP BY login HAVING sum(images) > 0 ORDER BY 3 DESC, 1");
  std::vector<Contributor> out;
  for (int i = 0; i < r.rows(); i++) out.push_back({r.get<std::string>(i, 0), r.get<int64_t>(i, 1), r.get<int64_t>(i, 2)});
  return out;
}
#endif

// A float32 hyper-parameter as people write it: 6 significant digits, so
// that 2e-4 stored as float shows as 0.0002, not 0.00019999999494757503.
nlohmann::json rounded(const nlohmann::json& v) {
  if (v.is_number_float()) return std::stod(fmt("%.6g", v.get<double>()));
  if (v.is_object()) {
    nlohmann::json o = nlohmann::json::object();
    for (auto& [k, x] : v.items()) o[k] = rounded(x);
    return o;
  }
  return v;
}

// Which public dataset a run used (from its path's last part), for the credit
// and the default licence; the path itself stays on the trainer's machine.
struct DatasetInfo {
  std::string name, credit, license;
};
DatasetInfo dataset_info(const std::string& path) {
  std::string base = fs::path(path).filename().string();
  if (base.empty()) base = fs::path(path).parent_path().filename().string();
  std::string low = base;
  std::transform(low.begin(), low.end(), low.begin(), [](unsigned char ch) { return (char)std::tolower(ch); });
  if (low.find("fashion") != std::string::npos)
    return {"Fashion-MNIST",
            "[Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist) by Zalando Research "
            "(Xiao, Rasul and Vollgraf, 2017), MIT licence",
            "mit"};
  if (low.find("celeba") != std::string::npos)
    return {"CelebA",
            "[CelebA](https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) (Liu, Luo, Wang and Tang, 2015), "
            "available for non-commercial research purposes only",
            "cc-by-nc-4.0"};
  if (low.rfind("synthetic", 0) == 0)
    return {"gannf's synthetic shapes", "gannf's built-in synthetic shapes (no external data)", "cc-by-4.0"};
  return {base.empty() ? "a folder of images" : base,
          "the images of `" + md_cell(base) + "` (credit their authors here before publishing)", "cc-by-4.0"};
}

void export_hub(Model& m, const std::string& out_dir, const std::vector<Contributor>& contributors,
                std::string license) {
  const fs::path out(out_dir);
  fs::create_directories(out);
  // The generator's safetensors, as written by training (PyTorch loads it).
  fs::copy_file(m.file, out / "generator.safetensors", fs::copy_options::overwrite_existing);
  // The code that loads it: the folder is complete without gannf.
  write_file_atomic((out / "generator.py").string(), kGeneratorPy);
  const auto st = SafeTensors::load(m.file);
  nlohmann::json training = nlohmann::json::object();
  if (auto it = st.metadata.find("gannf.training"); it != st.metadata.end())
    training = nlohmann::json::parse(it->second, nullptr, false);
  if (training.is_discarded() || !training.is_object()) training = nlohmann::json::object();
  const DatasetInfo data = dataset_info(training.value("dataset", std::string()));
  if (training.contains("dataset")) training["dataset"] = data.name;  // not the trainer's local path
  training = rounded(training);
  if (license.empty()) license = data.license;
  const int64_t nbt = st.ints("main.1.num_batches_tracked")[0];
  nlohmann::json config = {{"architecture", "DCGAN generator"},
                           {"library", "gannf"},
                           {"image_size", m.cfg.image_size},
                           {"nz", m.cfg.nz},
                           {"ngf", m.cfg.ngf},
                           {"nc", m.cfg.nc},
                           {"output_range", "[-1, 1], tanh"},
                           {"state_dict_prefix", "main."},
                           {"training", training},
                           {"batches_seen", nbt}};
  write_file_atomic((out / "config.json").string(), config.dump(2) + "\n");
  std::vector<float> z;
  for (uint64_t s = 0; s < 64; s++) {
    auto v = m.noise(s);
    z.insert(z.end(), v.begin(), v.end());
  }
  const auto img = m.generate(z);
  write_grid_png((out / "samples.png").string(), img.data(), 64, m.cfg.nc, m.cfg.image_size, 8);
  // Loss curve, if the checkpoint sits in a gannf-train output folder.
  const fs::path run_dir = fs::path(m.file).parent_path().parent_path().parent_path();
  const bool has_curve = fs::exists(run_dir / "loss-curve.png");
  if (has_curve)
    fs::copy_file(run_dir / "loss-curve.png", out / "loss-curve.png",
                  fs::copy_options::overwrite_existing);
  std::string last_losses;
  {
    std::ifstream f(run_dir / "losses.csv");
    for (std::string l; std::getline(f, l);) last_losses = l;
  }
  const int S = m.cfg.image_size;
  std::ostringstream md;
  md << "---\nlibrary_name: pytorch\nlicense: " << license
     << "\ntags:\n- dcgan\n- gan\n- unconditional-image-generation\n- gannf\n---\n\n"
     << "# DCGAN generator (" << S << "x" << S << ", " << (m.cfg.nc == 1 ? "grayscale" : "RGB") << ", "
     << data.name << ")\n\nTrained with gannf — a classroom's laptops and "
        "GPUs training one DCGAN through PostgreSQL, with hand-written kernels and no "
        "framework.\n\n![samples](samples.png)\n\n"
     << "## Use\n\n`generator.py` (in this folder) defines the network; it needs `torch` and `safetensors`.\n\n"
        "```python\nimport torch\nfrom generator import Generator\n\n"
        "G = Generator.from_folder(\".\")  # config.json + generator.safetensors, eval mode\n"
        "with torch.no_grad():\n    images = G(torch.randn(16, G.nz, 1, 1))  # (16, "
     << m.cfg.nc << ", " << S << ", " << S << "), in [-1, 1]\n```\n\n"
     << "or `python generator.py --count 64 --out samples-torch.png`.\n\n"
     << "## Architecture\n\nThe reference DCGAN generator as a PyTorch `nn.Sequential` named "
        "`main`: ConvTranspose2d(nz="
     << m.cfg.nz << " -> " << (S == 64 ? 8 : 4) * m.cfg.ngf
     << ", 4, 1, 0), then stride-2 ConvTranspose2d + BatchNorm2d + ReLU stages halving the "
        "width, then ConvTranspose2d(-> "
     << m.cfg.nc << ") + Tanh. ngf = " << m.cfg.ngf << ". Output in [-1, 1].\n\n"
     << "## Data\n\n" << data.credit << ".\n\n"
     << "## Training\n\n| setting | value |\n| --- | --- |\n";
  for (auto& [k, v] : training.items())
    md << "| " << md_cell(k) << " | " << md_cell(v.is_string() ? v.get<std::string>() : v.dump()) << " |\n";
  md << "| batches seen (num_batches_tracked) | " << nbt << " |\n";
  if (!last_losses.empty())
    md << "\nLast row of losses.csv (step, epoch, d_loss, g_loss, D(x), D(G(z)), D accuracy): `"
       << last_losses << "`\n";
  if (has_curve) md << "\n![loss curve](loss-curve.png)\n";
  md << "\n## Contributors\n\n";
  if (contributors.empty()) {
    md << "Trained on one machine.\n";
  } else {
    md << "The class whose machines computed this model's gradients, with the work units and images of "
          "theirs that were accepted:\n\n| login | units | images |\n| --- | ---: | ---: |\n";
    for (const auto& c : contributors) md << "| " << md_cell(c.login) << " | " << c.units << " | " << c.images << " |\n";
  }
  md << "\n## Licence\n\n`" << license << "`" << (data.license == "cc-by-nc-4.0" && license == data.license
                                                     ? ": the training data's terms allow non-commercial use only."
                                                     : ".")
     << "\n\n## Publish\n\nFrom this folder, with the Hugging Face CLI (`pip install -U huggingface_hub`):\n\n"
        "```\nhf upload <user>/<repo> .\n```\n";
  write_file_atomic((out / "README.md").string(), md.str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, out, seeds = "0-63", backend = "cpu";
  int cols = 8, steps = 10;
  uint64_t from = 0, to = 1;
  bool slerp = false;
  cli::Parser p("gannf-generate", kUsage);
  p.opt("checkpoint", &checkpoint, "checkpoint folder, output folder or generator .safetensors");
  p.opt("out", &out, "output file (grid, interpolate, dump) or folder (images, export)");
  p.opt("seeds", &seeds, "seeds for grid/images/dump, e.g. 0-63 or 3,7,9");
  p.opt("cols", &cols, "grid columns");
  p.opt("from", &from, "interpolate: first seed");
  p.opt("to", &to, "interpolate: last seed");
  p.opt("steps", &steps, "interpolate: images in the strip (>= 2)");
  p.flag("slerp", &slerp, "interpolate along the sphere instead of a straight line");
  p.opt("backend", &backend, "cpu, cuda or auto (cuda when a usable GPU is found, else cpu)");
  std::string contributors_file, db, license;
  p.opt("contributors", &contributors_file, "export: the class's contributors, a CSV of login,units,images");
#ifdef GANNF_HAVE_PQ
  p.opt("db", &db, "export: read the contributors from the cluster run's leaderboard in this database");
#endif
  p.opt("license", &license, "export: the licence id (default: from the dataset; cc-by-nc-4.0 for CelebA)");
  std::string cmd;
  p.positional("command", &cmd, "grid, images, interpolate, dump or export");
  try {
    p.parse(argc, argv);
    if (p.help_requested || cmd.empty()) {
      std::fputs(p.help().c_str(), cmd.empty() && !p.help_requested ? stderr : stdout);
      return p.help_requested ? 0 : 2;
    }
    if (cmd != "grid" && cmd != "images" && cmd != "interpolate" && cmd != "dump" &&
        cmd != "export")
      throw cli::Error("unknown command '" + cmd + "' (grid, images, interpolate, dump, export)");
    if (checkpoint.empty()) throw cli::Error("--checkpoint is required");
    if (out.empty()) throw cli::Error("--out is required");
    if (cols <= 0) throw cli::Error("--cols must be positive");
    if (steps < 2) throw cli::Error("--steps must be at least 2");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-generate: %s\n", e.what());
    return 2;
  }
  cpu::blas_ensure_coretype(argc, argv, true);
  try {
    Model m(checkpoint, backend);
    const int S = m.cfg.image_size, nc = m.cfg.nc;
    if (cmd == "export") {
      std::vector<Contributor> contributors;
      if (!contributors_file.empty()) contributors = read_contributors(contributors_file);
#ifdef GANNF_HAVE_PQ
      if (!db.empty()) contributors = contributors_from_db(db);
#endif
      export_hub(m, out, contributors, license);
      std::printf("wrote %s (generator.safetensors, generator.py, config.json, README.md, samples.png; "
                  "%zu contributors); publish from it with: hf upload <user>/<repo> .\n",
                  out.c_str(), contributors.size());
      return 0;
    }
    std::vector<float> z;
    std::vector<uint64_t> list;
    if (cmd == "interpolate") {
      const auto a = m.noise(from), b = m.noise(to);
      double na = 0, nb = 0, dot = 0;
      for (int i = 0; i < m.cfg.nz; i++) na += a[i] * a[i], nb += b[i] * b[i], dot += a[i] * b[i];
      const double omega = std::acos(std::clamp(dot / std::sqrt(na * nb), -1.0, 1.0));
      for (int s = 0; s < steps; s++) {
        const double t = (double)s / (steps - 1);
        for (int i = 0; i < m.cfg.nz; i++) {
          double v;
          if (slerp && omega > 1e-6)
            v = (std::sin((1 - t) * omega) * a[i] + std::sin(t * omega) * b[i]) / std::sin(omega);
          else
            v = (1 - t) * a[i] + t * b[i];
          z.push_back((float)v);
        }
      }
    } else {
      list = parse_seeds(seeds);
      for (auto s : list) {
        auto v = m.noise(s);
        z.insert(z.end(), v.begin(), v.end());
      }
    }
    const auto img = m.generate(z);
    const int n = (int)(z.size() / m.cfg.nz);
    const size_t per = (size_t)nc * S * S;
    if (cmd == "grid") {
      write_grid_png(out, img.data(), n, nc, S, cols);
    } else if (cmd == "interpolate") {
      write_grid_png(out, img.data(), n, nc, S, n);
    } else if (cmd == "images") {
      fs::create_directories(out);
      for (int i = 0; i < n; i++)
        write_grid_png((fs::path(out) / ("seed-" + std::to_string(list[i]) + ".png")).string(),
                       img.data() + i * per, 1, nc, S, 1, 0);
    } else if (cmd == "dump") {
      save_safetensors(out, {{"noise", StTensor::f32({n, m.cfg.nz, 1, 1}, z)},
                             {"images", StTensor::f32({n, nc, S, S}, img)}});
    }
    std::printf("wrote %s (%d image%s, %s)\n", out.c_str(), n, n == 1 ? "" : "s",
                m.cfg.describe().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
