// The Multa::Collector plugin: registers the collector analyzer and puts one
// into the analyzer tree of every TCP, UDP and ICMP connection once the
// package's scripts have started it (Multa::collector_start).
#include <zeek/Conn.h>
#include <zeek/analyzer/Component.h>
#include <zeek/packet_analysis/protocol/tcp/TCPSessionAdapter.h>
#include <zeek/plugin/Plugin.h>

#include "Collector.h"
#include "config.h"

namespace multa::collector {

class Plugin : public zeek::plugin::Plugin {
protected:
    zeek::plugin::Configuration Configure() override {
        AddComponent(new zeek::analyzer::Component("MULTA_COLLECTOR", Collector::Instantiate));
        EnableHook(zeek::plugin::HOOK_SETUP_ANALYZER_TREE);

        zeek::plugin::Configuration config;
        config.name = "Multa::Collector";
        config.description = "multa: first-N packet sequences of every connection, collected in C++";
        config.version.major = MULTA_COLLECTOR_VERSION_MAJOR;
        config.version.minor = MULTA_COLLECTOR_VERSION_MINOR;
        config.version.patch = MULTA_COLLECTOR_VERSION_PATCH;
        return config;
    }

    void HookSetupAnalyzerTree(zeek::Connection* conn) override {
        const auto& s = settings();
        // A connection whose first packet comes while collection is
        // paused is never collected: no collector at all.
        if ( ! s.wanted || ! s.enabled )
            return;

        auto* root = conn->GetSessionAdapter();
        if ( ! root )
            return;

        switch ( conn->ConnTransport() ) {
            case TRANSPORT_TCP: {
                // TCP hands packets to its packet children (like ConnSize),
                // which it has initialised already.
                auto* c = new Collector(conn);
                static_cast<zeek::packet_analysis::TCP::TCPSessionAdapter*>(root)->AddChildPacketAnalyzer(c);
                c->Init();
                break;
            }
            case TRANSPORT_UDP:
            case TRANSPORT_ICMP: root->AddChildAnalyzer(new Collector(conn)); break;
            default: break; // not in the model's representation
        }
    }
} plugin;

} // namespace multa::collector
