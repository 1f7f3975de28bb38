#include "pg.h"

#include <poll.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

namespace gannf::pg {

namespace {

// Binary wire format: integers and floats in network byte order.
template <class U>
U to_network(U v) {
  if constexpr (std::endian::native == std::endian::little) {
    if constexpr (sizeof(U) == 2) return (U)__builtin_bswap16((uint16_t)v);
    if constexpr (sizeof(U) == 4) return (U)__builtin_bswap32((uint32_t)v);
    if constexpr (sizeof(U) == 8) return (U)__builtin_bswap64((uint64_t)v);
  }
  return v;
}

template <class U>
std::string be_bytes(U v) {
  U n = to_network(v);
  return std::string(reinterpret_cast<const char*>(&n), sizeof n);
}

template <class U>
U read_be(const char* p) {
  U v;
  std::memcpy(&v, p, sizeof v);
  return to_network(v);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string field(const PGresult* r, int code) {
  const char* v = PQresultErrorField(r, code);
  return v ? v : "";
}

// PostgreSQL's epoch for timestamps: 2000-01-01 00:00:00 UTC.
constexpr int64_t kPgEpochUnixMicros = 946684800LL * 1000000;

const char* kConnectHint =
    "set PGHOST/PGPORT/PGDATABASE/PGUSER (or PGSERVICE), or pass a connection string or "
    "postgresql:// URI; for a private server: tools/pg-embedded.sh start DIR, then "
    "eval \"$(tools/pg-embedded.sh env DIR)\"";

}  // namespace

// ---------------------------------------------------------------- Error

Error::Error(const std::string& message, std::string sqlstate, std::string detail, std::string hint,
             std::string constraint, bool connection_lost)
    : std::runtime_error([&] {
        std::string w = message;
        if (!sqlstate.empty()) w += " (SQLSTATE " + sqlstate + ")";
        if (!hint.empty()) w += "; hint: " + hint;
        return w;
      }()),
      message_(message),
      sqlstate_(std::move(sqlstate)),
      detail_(std::move(detail)),
      hint_(std::move(hint)),
      constraint_(std::move(constraint)),
      connection_lost_(connection_lost) {}

bool Error::server_unwritable() const {
  // 25006 read_only_sql_transaction; class 53 insufficient resources (53100
  // disk_full, 53200 out_of_memory, 53300 too_many_connections).
  return sqlstate_ == "25006" || sqlstate_.rfind("53", 0) == 0;
}

// ---------------------------------------------------------------- Params

Params& Params::push(Oid type, const char* value, size_t length) {
  if (length > (size_t)std::numeric_limits<int>::max())
    throw Error("parameter " + std::to_string(types_.size() + 1) + " is " + std::to_string(length) +
                " bytes; libpq takes at most 2 GiB per value");
  types_.push_back(type);
  values_.push_back(value);
  lengths_.push_back((int)length);
  formats_.push_back(1);
  return *this;
}

Params& Params::push_owned(Oid type, std::string bytes) {
  owned_.push_back(std::move(bytes));
  return push(type, owned_.back().data(), owned_.back().size());
}

Params& Params::null(Oid type) {
  types_.push_back(type);
  values_.push_back(nullptr);
  lengths_.push_back(0);
  formats_.push_back(1);
  return *this;
}

Params& Params::add(bool v) { return push_owned(oid::kBool, std::string(1, v ? '\1' : '\0')); }
Params& Params::add(int16_t v) { return push_owned(oid::kInt2, be_bytes((uint16_t)v)); }
Params& Params::add(int32_t v) { return push_owned(oid::kInt4, be_bytes((uint32_t)v)); }
Params& Params::add(int64_t v) { return push_owned(oid::kInt8, be_bytes((uint64_t)v)); }
Params& Params::add(float v) { return push_owned(oid::kFloat4, be_bytes(std::bit_cast<uint32_t>(v))); }
Params& Params::add(double v) { return push_owned(oid::kFloat8, be_bytes(std::bit_cast<uint64_t>(v))); }
Params& Params::add(std::string_view text) { return push_owned(oid::kText, std::string(text)); }

Params& Params::bytes(std::span<const std::byte> data) {
  // A zero-length value must still be non-NULL.
  static const char empty = 0;
  return push(oid::kBytea, data.empty() ? &empty : reinterpret_cast<const char*>(data.data()),
              data.size());
}

Params& Params::floats(std::span<const float> data) {
  if constexpr (std::endian::native == std::endian::little) {
    return bytes(std::as_bytes(data));
  } else {
    std::string le(data.size() * 4, '\0');
    for (size_t i = 0; i < data.size(); ++i) {
      uint32_t u = __builtin_bswap32(std::bit_cast<uint32_t>(data[i]));
      std::memcpy(&le[4 * i], &u, 4);
    }
    return push_owned(oid::kBytea, std::move(le));
  }
}

// ---------------------------------------------------------------- Result

Result& Result::operator=(Result&& o) noexcept {
  if (this != &o) {
    if (r_) PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}

Result::~Result() {
  if (r_) PQclear(r_);
}

int64_t Result::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : "";
  return *n ? std::stoll(n) : 0;
}

int Result::column(std::string_view name) const {
  for (int c = 0; c < cols(); ++c)
    if (name == PQfname(r_, c)) return c;
  throw Error("result has no column \"" + std::string(name) + "\"");
}

std::string Result::column_name(int c) const { return PQfname(r_, c); }

void Result::type_error(int c, const char* wanted) const {
  throw Error("column \"" + column_name(c) + "\" has type oid " + std::to_string(type(c)) +
              ", not " + wanted + " (cast it in the SQL)");
}

std::span<const std::byte> Result::bytes(int r, int c) const {
  if (r < 0 || r >= rows() || c < 0 || c >= cols())
    throw Error("no value at row " + std::to_string(r) + ", column " + std::to_string(c));
  return {reinterpret_cast<const std::byte*>(PQgetvalue(r_, r, c)), (size_t)PQgetlength(r_, r, c)};
}

template <>
bool Result::get<bool>(int r, int c) const {
  if (type(c) != oid::kBool) type_error(c, "boolean");
  if (is_null(r, c)) throw Error("column \"" + column_name(c) + "\" is NULL");
  return PQgetvalue(r_, r, c)[0] != 0;
}

template <>
int64_t Result::get<int64_t>(int r, int c) const {
  if (is_null(r, c)) throw Error("column \"" + column_name(c) + "\" is NULL");
  const char* p = PQgetvalue(r_, r, c);
  switch (type(c)) {
    case oid::kInt2: return (int16_t)read_be<uint16_t>(p);
    case oid::kInt4: return (int32_t)read_be<uint32_t>(p);
    case oid::kInt8: return (int64_t)read_be<uint64_t>(p);
    default: type_error(c, "an integer");
  }
}

template <>
int32_t Result::get<int32_t>(int r, int c) const {
  if (type(c) == oid::kInt8) type_error(c, "int4 or int2");
  return (int32_t)get<int64_t>(r, c);
}

template <>
int16_t Result::get<int16_t>(int r, int c) const {
  if (type(c) != oid::kInt2) type_error(c, "int2");
  return (int16_t)get<int64_t>(r, c);
}

template <>
double Result::get<double>(int r, int c) const {
  if (is_null(r, c)) throw Error("column \"" + column_name(c) + "\" is NULL");
  const char* p = PQgetvalue(r_, r, c);
  switch (type(c)) {
    case oid::kFloat4: return std::bit_cast<float>(read_be<uint32_t>(p));
    case oid::kFloat8: return std::bit_cast<double>(read_be<uint64_t>(p));
    default: type_error(c, "float4 or float8");
  }
}

template <>
float Result::get<float>(int r, int c) const {
  if (type(c) != oid::kFloat4) type_error(c, "float4 (real)");
  return (float)get<double>(r, c);
}

template <>
std::string Result::get<std::string>(int r, int c) const {
  if (is_null(r, c)) throw Error("column \"" + column_name(c) + "\" is NULL");
  const char* p = PQgetvalue(r_, r, c);
  int n = PQgetlength(r_, r, c);
  switch (type(c)) {
    case oid::kText: case oid::kVarchar: case oid::kName: return std::string(p, n);
    case oid::kJsonb: return n > 0 ? std::string(p + 1, n - 1) : std::string();  // version byte
    default:
      // Enums and other text-like types have catalog-assigned OIDs; their
      // binary form is their text too, but only the caller knows it is one.
      type_error(c, "text (cast with ::text)");
  }
}

template <>
TimePoint Result::get<TimePoint>(int r, int c) const {
  if (type(c) != oid::kTimestamptz) type_error(c, "timestamptz");
  if (is_null(r, c)) throw Error("column \"" + column_name(c) + "\" is NULL");
  int64_t us = (int64_t)read_be<uint64_t>(PQgetvalue(r_, r, c));
  if (us == std::numeric_limits<int64_t>::max()) return TimePoint::max();  // 'infinity'
  if (us == std::numeric_limits<int64_t>::min()) return TimePoint::min();  // '-infinity'
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::microseconds(us + kPgEpochUnixMicros)));
}

// ---------------------------------------------------------------- Connection

Connection::Connection(const std::string& conninfo)
    : conninfo_(conninfo), notice_(std::make_unique<NoticeState>()) {
  c_ = PQconnectdb(conninfo.c_str());
  if (!c_) throw Error("out of memory allocating a libpq connection");
  if (PQstatus(c_) != CONNECTION_OK) {
    std::string msg = trim(PQerrorMessage(c_));
    PQfinish(c_);
    c_ = nullptr;
    // libpq's own message already names the socket or host and port tried.
    std::string hint = kConnectHint;
    if (msg.find("password") != std::string::npos)
      hint = "put the password in ~/.pgpass (or the file PGPASSFILE names) or in PGPASSWORD; "
             "it never has to be in the config file";
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    throw Error("cannot connect to PostgreSQL: " + msg, "08001", "", hint, "", true);
  }
  notice_->fn = [](const std::string& m) { std::fprintf(stderr, "postgres: %s\n", m.c_str()); };
  PQsetNoticeReceiver(c_, &Connection::notice_trampoline, notice_.get());
}

Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    if (c_) PQfinish(c_);
    c_ = o.c_;
    o.c_ = nullptr;
    conninfo_ = std::move(o.conninfo_);
    notice_ = std::move(o.notice_);
  }
  return *this;
}

Connection::~Connection() {
  if (c_) PQfinish(c_);
}

void Connection::notice_trampoline(void* state, const PGresult* r) {
  auto* s = static_cast<NoticeState*>(state);
  if (!s->fn) return;
  std::string m = field(r, PG_DIAG_SEVERITY) + ": " + field(r, PG_DIAG_MESSAGE_PRIMARY);
  s->fn(m);
}

void Connection::on_notice(std::function<void(const std::string&)> handler) {
  notice_->fn = std::move(handler);
}

void Connection::throw_result_error(PGresult* r, std::string_view sql) const {
  std::string sqlstate = r ? field(r, PG_DIAG_SQLSTATE) : "";
  std::string msg = r ? field(r, PG_DIAG_MESSAGE_PRIMARY) : "";
  if (msg.empty()) msg = trim(PQerrorMessage(c_));
  std::string detail = r ? field(r, PG_DIAG_MESSAGE_DETAIL) : "";
  std::string hint = r ? field(r, PG_DIAG_MESSAGE_HINT) : "";
  std::string constraint = r ? field(r, PG_DIAG_CONSTRAINT_NAME) : "";
  const bool libpq_error = !r || (PQresultStatus(r) == PGRES_FATAL_ERROR && sqlstate.empty());
  if (r) PQclear(r);
  // An error the server did not send (no SQLSTATE) while running a statement
  // is libpq's own, and all of those are about the socket: "server closed the
  // connection unexpectedly" comes with PQstatus still CONNECTION_OK. The
  // session is unusable either way (a half-read reply), so it counts as lost.
  bool lost = PQstatus(c_) == CONNECTION_BAD || PQtransactionStatus(c_) == PQTRANS_UNKNOWN || libpq_error ||
              sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
  if (lost && hint.empty()) hint = "the connection to " + describe() + " was lost; reconnect and retry";
  if (sqlstate == "42501" && hint.empty())
    hint = "connected as " + std::string(PQuser(c_)) + "; the worker role may only call the gannf "
           "functions and read weights and training state";
  if (sqlstate.empty() && !sql.empty()) {
    std::string head(sql.substr(0, 60));
    std::replace(head.begin(), head.end(), '\n', ' ');
    msg += " [in: " + head + (sql.size() > 60 ? "…]" : "]");
  }
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  throw Error(msg, sqlstate, detail, hint, constraint, lost);
}

Result Connection::exec(std::string_view sql, const Params& params) {
  std::string q(sql);
  PGresult* r = PQexecParams(c_, q.c_str(), params.size(), params.types(), params.values(),
                             params.lengths(), params.formats(), /*resultFormat=*/1);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) throw_result_error(r, sql);
  return Result(r);
}

void Connection::exec_script(std::string_view sql) {
  std::string q(sql);
  PGresult* r = PQexec(c_, q.c_str());
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) throw_result_error(r, sql);
  PQclear(r);
}

std::string Connection::quote_identifier(std::string_view name) const {
  char* q = PQescapeIdentifier(c_, name.data(), name.size());
  if (!q) throw Error("cannot quote identifier: " + trim(PQerrorMessage(c_)));
  std::string s(q);
  PQfreemem(q);
  return s;
}

std::string Connection::quote_literal(std::string_view value) const {
  char* q = PQescapeLiteral(c_, value.data(), value.size());
  if (!q) throw Error("cannot quote literal: " + trim(PQerrorMessage(c_)));
  std::string s(q);
  PQfreemem(q);
  return s;
}

void Connection::listen(std::string_view channel) { exec("LISTEN " + quote_identifier(channel)); }
void Connection::unlisten(std::string_view channel) { exec("UNLISTEN " + quote_identifier(channel)); }

void Connection::notify(std::string_view channel, std::string_view payload) {
  Params p;
  p.add(channel).add(payload);
  exec("SELECT pg_notify($1, $2)", p);
}

std::optional<Notification> Connection::wait_notification(std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!PQconsumeInput(c_))
      throw Error("lost the connection while waiting for notifications: " + trim(PQerrorMessage(c_)),
                  "08006", "", "reconnect and LISTEN again", "", true);
    if (PGnotify* n = PQnotifies(c_)) {
      Notification out{n->relname ? n->relname : "", n->extra ? n->extra : "", n->be_pid};
      PQfreemem(n);
      return out;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd pfd{PQsocket(c_), POLLIN, 0};
    if (pfd.fd < 0) throw Error("connection has no socket", "08006", "", "reconnect", "", true);
    int rc = ::poll(&pfd, 1, (int)std::min<int64_t>(left.count(), std::numeric_limits<int>::max()));
    if (rc < 0 && errno != EINTR)
      throw Error(std::string("poll on the database socket failed: ") + std::strerror(errno));
  }
}

std::string Connection::describe() const {
  if (!c_) return "(not connected)";
  std::string host = PQhost(c_) ? PQhost(c_) : "";
  return std::string(PQuser(c_)) + "@" + host + ":" + PQport(c_) + "/" + PQdb(c_);
}

bool Connection::in_transaction() const {
  auto s = PQtransactionStatus(c_);
  return s == PQTRANS_INTRANS || s == PQTRANS_INERROR || s == PQTRANS_ACTIVE;
}

// ---------------------------------------------------------------- Transaction

Transaction::Transaction(Connection& c, std::string_view begin) : c_(c) { c_.exec(begin); }

Transaction::~Transaction() {
  if (!open_) return;
  // Never throws from a destructor: if the connection is gone, so is the
  // transaction.
  if (PGresult* r = PQexec(c_.raw(), "ROLLBACK")) PQclear(r);
}

void Transaction::commit() {
  open_ = false;
  // COMMIT of a transaction that had failed "succeeds" with tag ROLLBACK.
  Result r = c_.exec("COMMIT");
  if (std::string_view(PQcmdStatus(r.raw())) == "ROLLBACK")
    throw Error("the transaction had failed and was rolled back at COMMIT", "25P02");
}

void Transaction::rollback() {
  open_ = false;
  c_.exec("ROLLBACK");
}

}  // namespace gannf::pg
