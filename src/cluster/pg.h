// A small RAII client over libpq: connections, binary-format parameters and
// results, transactions, LISTEN/NOTIFY with a timeout, errors that say what
// failed and what to try.
//
// Connection strings are libpq's: "" takes everything from libpq's defaults
// (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE and
// PGSERVICEFILE, ~/.pgpass), "host=... dbname=..." or a URI
// "postgresql://user@host:port/db" set what they name and leave the rest to
// those defaults.
//
// Every statement goes through PQexecParams with binary results, so numbers
// arrive in network byte order and bytea as its raw bytes (a 25 MB gradient
// blob is neither hex-escaped nor parsed); exec_script() is the exception,
// for multi-statement SQL (migrations) whose results nobody reads.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gannf::pg {

// Type OIDs, fixed in PostgreSQL's catalog (pg_type.dat) since forever.
namespace oid {
constexpr Oid kBool = 16, kBytea = 17, kName = 19, kInt8 = 20, kInt2 = 21, kInt4 = 23,
              kText = 25, kFloat4 = 700, kFloat8 = 701, kVarchar = 1043,
              kTimestamptz = 1184, kJsonb = 3802;
}

// Any failure: connecting, a statement, the connection dropping. what() is one
// line: the server's message, its SQLSTATE, and the hint if there is one.
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, std::string sqlstate = {}, std::string detail = {},
        std::string hint = {}, std::string constraint = {}, bool connection_lost = false);
  const std::string& message() const { return message_; }
  const std::string& sqlstate() const { return sqlstate_; }      // "" for client-side errors
  const std::string& detail() const { return detail_; }
  const std::string& hint() const { return hint_; }
  const std::string& constraint() const { return constraint_; }  // for 23xxx violations
  // The connection is gone (network, server restart): reconnect and retry.
  bool connection_lost() const { return connection_lost_; }
  // The server is up but takes no writes for now: read-only (a standby, or
  // default_transaction_read_only), disk full, out of memory or connection
  // slots. Nothing was written; wait and retry.
  bool server_unwritable() const;
  // Either: a caller that can wait should wait and retry, never give up.
  bool retry_later() const { return connection_lost_ || server_unwritable(); }

 private:
  std::string message_, sqlstate_, detail_, hint_, constraint_;
  bool connection_lost_;
};

// Parameters of one statement, binary format. Small values are copied into
// the Params; bytes()/floats() point at the caller's memory, which must stay
// alive and unchanged until exec() returns (no copy of a 25 MB blob).
class Params {
 public:
  Params() = default;
  Params(const Params&) = delete;
  Params& operator=(const Params&) = delete;
  Params(Params&&) = default;
  Params& operator=(Params&&) = default;

  Params& null(Oid type = 0);
  Params& add(bool v);
  Params& add(int16_t v);
  Params& add(int32_t v);
  Params& add(int64_t v);
  Params& add(float v);
  Params& add(double v);
  Params& add(std::string_view text);                 // text
  Params& add(const char* text) { return add(std::string_view(text)); }
  Params& add(const std::string& text) { return add(std::string_view(text)); }
  template <class T>
  Params& add(const std::optional<T>& v);
  Params& bytes(std::span<const std::byte> data);       // bytea, not copied
  Params& bytes(const void* data, size_t n) {
    return bytes(std::span<const std::byte>(static_cast<const std::byte*>(data), n));
  }
  // bytea holding raw little-endian float32: not copied on little-endian
  // hosts, byte-swapped into the Params on big-endian ones.
  Params& floats(std::span<const float> data);

  int size() const { return (int)types_.size(); }
  const Oid* types() const { return types_.data(); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  Params& push(Oid type, const char* value, size_t length);
  Params& push_owned(Oid type, std::string bytes);
  std::vector<Oid> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::deque<std::string> owned_;   // a deque never moves its elements
};

template <class T>
Params& Params::add(const std::optional<T>& v) {
  if (v) return add(*v);
  if constexpr (std::is_same_v<T, bool>) return null(oid::kBool);
  else if constexpr (std::is_same_v<T, int16_t>) return null(oid::kInt2);
  else if constexpr (std::is_same_v<T, int32_t>) return null(oid::kInt4);
  else if constexpr (std::is_same_v<T, int64_t>) return null(oid::kInt8);
  else if constexpr (std::is_same_v<T, float>) return null(oid::kFloat4);
  else if constexpr (std::is_same_v<T, double>) return null(oid::kFloat8);
  else return null(oid::kText);
}

using TimePoint = std::chrono::system_clock::time_point;

// The result of one statement, binary format. Getters check the column's
// type and throw Error naming the column when it doesn't fit.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r) : r_(r) {}
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  ~Result();

  int rows() const { return r_ ? PQntuples(r_) : 0; }
  int cols() const { return r_ ? PQnfields(r_) : 0; }
  int64_t affected() const;                 // rows an INSERT/UPDATE/DELETE touched
  int column(std::string_view name) const;  // throws if there is none
  std::string column_name(int c) const;
  Oid type(int c) const { return PQftype(r_, c); }
  bool is_null(int r, int c) const { return PQgetisnull(r_, r, c); }

  // bool; int16/int32/int64 (from any narrower integer column); float
  // (float4); double (float4/float8); std::string (text, varchar, name,
  // jsonb's text); TimePoint (timestamptz). NULL throws: use opt<T>.
  template <class T>
  T get(int r, int c) const;
  template <class T>
  T get(int r, std::string_view name) const { return get<T>(r, column(name)); }
  template <class T>
  std::optional<T> opt(int r, int c) const {
    if (is_null(r, c)) return std::nullopt;
    return get<T>(r, c);
  }
  template <class T>
  std::optional<T> opt(int r, std::string_view name) const { return opt<T>(r, column(name)); }

  // The raw binary value (bytea: its bytes), valid while the Result lives.
  std::span<const std::byte> bytes(int r, int c) const;
  std::span<const std::byte> bytes(int r, std::string_view name) const { return bytes(r, column(name)); }

  PGresult* raw() const { return r_; }

 private:
  [[noreturn]] void type_error(int c, const char* wanted) const;
  PGresult* r_ = nullptr;
};

template <> bool Result::get<bool>(int r, int c) const;
template <> int16_t Result::get<int16_t>(int r, int c) const;
template <> int32_t Result::get<int32_t>(int r, int c) const;
template <> int64_t Result::get<int64_t>(int r, int c) const;
template <> float Result::get<float>(int r, int c) const;
template <> double Result::get<double>(int r, int c) const;
template <> std::string Result::get<std::string>(int r, int c) const;
template <> TimePoint Result::get<TimePoint>(int r, int c) const;

struct Notification {
  std::string channel;
  std::string payload;
  int backend_pid = 0;
};

class Connection {
 public:
  // Connects at once; throws Error with libpq's message and a hint.
  explicit Connection(const std::string& conninfo = "");
  Connection(Connection&& o) noexcept
      : c_(o.c_), conninfo_(std::move(o.conninfo_)), notice_(std::move(o.notice_)) {
    o.c_ = nullptr;
  }
  Connection& operator=(Connection&& o) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // One statement, $1.. parameters, binary results. Throws Error.
  Result exec(std::string_view sql, const Params& params = Params());
  // Several statements separated by semicolons, no parameters (text
  // protocol); for migrations and set-up. Throws Error.
  void exec_script(std::string_view sql);

  void listen(std::string_view channel);
  void unlisten(std::string_view channel);
  // A notification that has arrived, or waits up to `timeout` for one
  // (poll on the socket, no busy loop). nullopt on timeout.
  std::optional<Notification> wait_notification(std::chrono::milliseconds timeout);
  void notify(std::string_view channel, std::string_view payload);

  // Where we are connected, for messages: "user@host:port/dbname".
  std::string describe() const;
  int server_version() const { return PQserverVersion(c_); }
  int backend_pid() const { return PQbackendPID(c_); }
  bool in_transaction() const;
  std::string quote_identifier(std::string_view name) const;
  std::string quote_literal(std::string_view value) const;
  // Server notices (NOTICE, WARNING) go here; the default writes them to
  // stderr with a "postgres:" prefix. An empty function drops them.
  void on_notice(std::function<void(const std::string&)> handler);

  PGconn* raw() const { return c_; }

 private:
  [[noreturn]] void throw_result_error(PGresult* r, std::string_view sql) const;
  static void notice_trampoline(void* state, const PGresult* r);
  struct NoticeState {  // on the heap: libpq keeps its address across moves
    std::function<void(const std::string&)> fn;
  };
  PGconn* c_ = nullptr;
  std::string conninfo_;
  std::unique_ptr<NoticeState> notice_;
};

// BEGIN on construction, ROLLBACK on destruction unless commit() ran: an
// exception anywhere inside leaves nothing half-done.
class Transaction {
 public:
  explicit Transaction(Connection& c, std::string_view begin = "BEGIN");
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();
  void commit();
  void rollback();
  Connection& connection() { return c_; }

 private:
  Connection& c_;
  bool open_ = true;
};

}  // namespace gannf::pg
