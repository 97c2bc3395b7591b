#include "Collector.h"

#include <zeek/Conn.h>
#include <zeek/Event.h>
#include <zeek/Func.h>
#include <zeek/ID.h>
#include <zeek/IP.h>
#include <zeek/Reporter.h>
#include <zeek/analyzer/Manager.h>
#include <zeek/RunState.h>
#include <zeek/Val.h>
#include <zeek/ZeekString.h>
#include <zeek/iosource/Packet.h>

#include <charconv>
#include <cmath>
#include <list>
#include <string>

namespace multa::collector {

// Collectors between their first packet and the end of collection, in the
// order of their first packets: flush() hands flows over in that order.
std::list<Collector*>& live() {
    static std::list<Collector*> list;
    return list;
}

namespace {

// The script side: Multa::Flow, its fields, and the event that takes it.
struct Script {
    zeek::RecordTypePtr flow;
    zeek::VectorTypePtr counts;
    zeek::VectorTypePtr bools;
    int uid, orig_h, orig_p, resp_h, resp_p, ts, sizes, dirs, iats, ctx;
    int conn_uid, conn_id;
    zeek::VectorTypePtr flows;
    zeek::EventHandlerPtr collected;
    zeek::FuncPtr count_dropped;
    const zeek::detail::ID* min_packets;

    Script() {
        const auto& flow_id = zeek::id::find("Multa::Flow");
        count_dropped = zeek::id::find_func("Multa::count_dropped");
        if ( ! flow_id || ! flow_id->IsType() || ! count_dropped || ! zeek::id::find("Multa::min_packets") )
            zeek::reporter->FatalError(
                "Multa::Collector: the multa package's scripts are not loaded (no Multa::Flow, "
                "Multa::count_dropped or Multa::min_packets)");
        flow = zeek::id::find_type<zeek::RecordType>("Multa::Flow");
        counts = flow->GetFieldType<zeek::VectorType>("sizes");
        bools = flow->GetFieldType<zeek::VectorType>("dirs");
        uid = flow->FieldOffset("uid");
        orig_h = flow->FieldOffset("orig_h");
        orig_p = flow->FieldOffset("orig_p");
        resp_h = flow->FieldOffset("resp_h");
        resp_p = flow->FieldOffset("resp_p");
        ts = flow->FieldOffset("ts");
        sizes = flow->FieldOffset("sizes");
        dirs = flow->FieldOffset("dirs");
        iats = flow->FieldOffset("iats");
        ctx = flow->FieldOffset("ctx");
        conn_uid = zeek::id::connection->FieldOffset("uid");
        conn_id = zeek::id::connection->FieldOffset("id");
        flows = zeek::make_intrusive<zeek::VectorType>(flow);
        collected = zeek::event_registry->Register("Multa::collected");
        min_packets = zeek::id::find("Multa::min_packets").get();
    }
};

// Looked up when the package starts the collector (zeek_init), once its
// scripts are loaded.
const Script& script() {
    static Script s;
    return s;
}

// The package's drop counter (zeek_scripts/main.zeek), for the rare cases
// the collector reports itself.
void count_dropped(const char* reason) {
    zeek::Args args{zeek::make_intrusive<zeek::StringVal>(reason), zeek::val_mgr->Count(1)};
    script().count_dropped->Invoke(&args);
}

// The packet's own timestamp, like get_current_packet_ts(): network_time
// never goes back, so with out-of-order timestamps it is not the packet's.
double packet_time() {
    const zeek::Packet* pkt = zeek::run_state::current_pkt;
    return pkt ? pkt->time : zeek::run_state::network_time;
}

// Appends a vector of count or bool as cat() renders it: "[60, 52]", "[T, F]".
// False where the vector has a hole (cat() would render it differently).
bool render(std::string& out, const zeek::VectorVal* v, bool bools) {
    const auto& raw = v->RawVec();
    out += '[';
    for ( size_t i = 0; i < raw.size(); ++i ) {
        if ( ! raw[i] )
            return false;
        if ( i )
            out += ", ";
        if ( bools )
            out += raw[i]->AsCount() ? 'T' : 'F';
        else {
            char buf[24];
            auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<uint64_t>(raw[i]->AsCount()));
            out.append(buf, r.ptr);
        }
    }
    out += ']';
    return true;
}

} // namespace

zeek::ValPtr pack(const zeek::Val* v) {
    const auto& sc = script();
    if ( ! v || v->GetType() != sc.flow ) {
        zeek::emit_builtin_error("Multa::pack_sequences: the argument must be a Multa::Flow");
        return nullptr;
    }
    const auto* f = v->AsRecordVal();
    std::string out;
    out.reserve(320);
    bool ok = render(out, f->GetField<zeek::VectorVal>(sc.sizes).get(), false);
    out += '|';
    ok = ok && render(out, f->GetField<zeek::VectorVal>(sc.dirs).get(), true);
    out += '|';
    ok = ok && render(out, f->GetField<zeek::VectorVal>(sc.iats).get(), false);
    if ( ok && f->HasField(sc.ctx) ) {
        out += '|';
        ok = render(out, f->GetField<zeek::VectorVal>(sc.ctx).get(), false);
    }
    if ( ! ok ) {
        zeek::emit_builtin_error("Multa::pack_sequences: a sequence has an unset element");
        return nullptr;
    }
    return zeek::make_intrusive<zeek::StringVal>(out);
}

Settings& settings() {
    static Settings s;
    return s;
}

void start(size_t max_packets) {
    auto& s = settings();
    s.wanted = true;
    s.enabled = true;
    s.max_packets = max_packets;
    // By tag, not name: the name's lookup would run for every connection.
    s.tag = zeek::analyzer_mgr->GetComponentTag("MULTA_COLLECTOR");
    script(); // fail at start-up, not at the first flow, if the scripts lack something
}

void set_enabled(bool on) {
    auto& s = settings();
    if ( s.enabled == on )
        return;
    s.enabled = on;
    ++s.epoch;
}

zeek::ValPtr flush(double min_age) {
    auto out = zeek::make_intrusive<zeek::VectorVal>(script().flows);
    // As in the scripts, nothing is sent while collection is paused.
    if ( ! settings().enabled )
        return out;

    // End() removes collectors from the set: pick first, end after.
    std::vector<Collector*> all(live().begin(), live().end());
    double now = zeek::run_state::network_time;
    for ( auto* c : all ) {
        if ( auto f = c->FlushIfOlder(now, min_age) )
            out->Append(std::move(f));
    }
    return out;
}

Collector::Collector(zeek::Connection* conn) : zeek::analyzer::Analyzer(settings().tag, conn) {
    // The uid is made when the connection record is first built; the
    // scripts' collector built it at the first packet, and uids come from
    // one random sequence, so build it here too and keep uids the same.
    conn->GetVal();
}

Collector::~Collector() {
    if ( phase == Phase::COLLECTING )
        live().erase(live_pos);
}

void Collector::DeliverPacket(int len, const u_char* data, bool is_orig, uint64_t seq, const zeek::IP_Hdr* ip,
                              int caplen) {
    if ( phase == Phase::FINISHED )
        return;

    auto& s = settings();
    if ( ! s.enabled ) {
        // Paused: nothing is recorded. A flow paused at its first packet
        // is never collected; a later one is not sent (GAP at emission).
        if ( phase == Phase::NEW )
            Finish();
        return;
    }

    double t = packet_time();
    uint32_t size = ip->TotalLen();

    if ( phase == Phase::NEW ) {
        if ( size < 20 || size > 65535 ) {
            zeek::reporter->Weird(Conn(), "multa_packet_size_out_of_range", std::to_string(size).c_str(), "multa");
            count_dropped("multa_packet_size_out_of_range");
            size = size < 20 ? 20 : 65535;
        }
        phase = Phase::COLLECTING;
        epoch = s.epoch;
        first_ts = last_ts = t;
        sizes.reserve(s.max_packets);
        iats.reserve(s.max_packets);
        dirs.reserve(s.max_packets);
        sizes.push_back(size);
        dirs.push_back(is_orig);
        iats.push_back(0);
        live_pos = live().insert(live().end(), this);
    }
    else {
        if ( size == 0 ) {
            // Neither side's byte count would rise (TSO): end the flow
            // before this packet, as the scripts' collector does.
            zeek::reporter->Weird(Conn(), "multa_packet_gap",
                                  zeek::util::fmt("packet %zu: IP length 0", sizes.size() + 1), "multa");
            count_dropped("multa_packet_gap");
            Emit(Reason::STOPPED);
            return;
        }

        uint64_t iat = 0;
        if ( t >= last_ts )
            iat = static_cast<uint64_t>(std::rint((t - last_ts) / 1e-6));
        else {
            zeek::reporter->Weird(Conn(), "multa_time_went_back", "", "multa");
            count_dropped("multa_time_went_back");
        }
        last_ts = t;
        sizes.push_back(size);
        dirs.push_back(is_orig);
        iats.push_back(iat);
    }

    if ( sizes.size() >= s.max_packets )
        Emit(Reason::REACHED);
}

void Collector::Done() {
    // A pause in force at the end drops the flow silently, as in the scripts.
    ending = true;
    if ( phase == Phase::COLLECTING && settings().enabled )
        Emit(Reason::ENDED);
    Finish();
    zeek::analyzer::Analyzer::Done();
}

void Collector::FlipRoles() {
    // The endpoints come from the connection at emission; directions flip here.
    dirs.flip();
    zeek::analyzer::Analyzer::FlipRoles();
}

zeek::RecordValPtr Collector::FlushIfOlder(double now, double min_age) {
    if ( phase != Phase::COLLECTING || now - first_ts < min_age )
        return nullptr;
    return End(Reason::FLUSHED);
}

void Collector::Finish() {
    if ( phase == Phase::FINISHED )
        return;
    if ( phase == Phase::COLLECTING )
        live().erase(live_pos);
    phase = Phase::FINISHED;
    // Out of the connection's analyzer tree, so that the connection's later
    // packets cost nothing here: the parent calls Done() and deletes it
    // before its next packet (not while the connection ends anyway).
    if ( ! ending && Parent() )
        Remove();
    std::vector<uint32_t>().swap(sizes);
    std::vector<uint64_t>().swap(iats);
    std::vector<bool>().swap(dirs);
}

void Collector::Emit(Reason reason) {
    if ( auto f = End(reason) )
        zeek::event_mgr.Enqueue(script().collected, std::move(f));
}

zeek::RecordValPtr Collector::End(Reason reason) {
    const auto& sc = script();
    zeek::RecordValPtr f;

    if ( epoch != settings().epoch ) {
        // Packets of the pause are missing: not sent (complete() in the scripts).
        const auto& cv = Conn()->GetVal();
        const char* uid = cv->GetFieldAs<zeek::StringVal>(sc.conn_uid)->CheckString();
        auto what = zeek::util::fmt("%s: collection paused meanwhile", uid);
        zeek::reporter->Weird(Conn()->OrigAddr(), Conn()->RespAddr(), "multa_packet_gap", what, "multa");
        count_dropped("multa_packet_gap");
    }
    else if ( reason == Reason::REACHED || sizes.size() >= sc.min_packets->GetVal()->AsCount() )
        f = MakeFlow();

    Finish();
    return f;
}

zeek::RecordValPtr Collector::MakeFlow() const {
    const auto& sc = script();
    const auto& cv = Conn()->GetVal();
    auto id = cv->GetField<zeek::RecordVal>(sc.conn_id);
    auto f = zeek::make_intrusive<zeek::RecordVal>(sc.flow);
    f->Assign(sc.uid, cv->GetField(sc.conn_uid));
    f->Assign(sc.orig_h, id->GetField(0));
    f->Assign(sc.orig_p, id->GetField(1));
    f->Assign(sc.resp_h, id->GetField(2));
    f->Assign(sc.resp_p, id->GetField(3));
    f->Assign(sc.ts, zeek::make_intrusive<zeek::TimeVal>(first_ts));

    auto vs = zeek::make_intrusive<zeek::VectorVal>(sc.counts);
    auto vd = zeek::make_intrusive<zeek::VectorVal>(sc.bools);
    auto vi = zeek::make_intrusive<zeek::VectorVal>(sc.counts);
    vs->Reserve(sizes.size());
    vd->Reserve(sizes.size());
    vi->Reserve(sizes.size());
    for ( size_t i = 0; i < sizes.size(); ++i ) {
        vs->Append(zeek::val_mgr->Count(sizes[i]));
        vd->Append(zeek::val_mgr->Bool(dirs[i]));
        vi->Append(zeek::val_mgr->Count(iats[i]));
    }
    f->Assign(sc.sizes, std::move(vs));
    f->Assign(sc.dirs, std::move(vd));
    f->Assign(sc.iats, std::move(vi));
    return f;
}

} // namespace multa::collector
