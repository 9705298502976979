//! The per-version lifetime's first half: an upload checked (wasm at all,
//! a component or a core module), compiled, its compiled code mapped back
//! from its file, its imports and exports checked, and pre-instantiated.
//! Everything a deploy refuses is refused here, before anything is stored.

use anyhow::Context as _;
use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, Precompiled};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
#[cfg(feature = "p3")]
use wasmtime_wasi_http::p3::bindings::ServicePre;

#[cfg(not(feature = "p3"))]
use crate::invocation::reuse::ServicePre;

use crate::capabilities::event_bindings::EventsPre;
use crate::engine::{EngineKind, WispEngine};
use crate::error::DeployError;
use crate::function::compiled::CodeFile;
use crate::invocation::InvocationState;
use crate::invocation::cgi::CgiState;
pub(crate) use crate::invocation::target::{ComponentPre, Prepared};

/// The export of a WASI 0.2 HTTP function (any 0.2.x).
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";
/// The export of a WASI 0.3 HTTP function (any 0.3.x: the `service` world).
#[cfg_attr(not(feature = "p3"), allow(dead_code))]
pub(crate) const HANDLER_P3: &str = "wasi:http/handler@0.3";
/// Prefix of Wisp's event-handler export's name (any 0.1.x).
pub(crate) const EVENT_HANDLER: &str = "wisp:function/event-handler@0.1";

/// The only import module a preview-1 function may use.
const WASI_P1: &str = "wasi_snapshot_preview1";

impl WispEngine {
    /// A runtime-only build has no compiler.
    #[cfg(not(feature = "cranelift"))]
    fn compile_wasm(&self, _wasm: &[u8]) -> Result<Compiled, DeployError> {
        Err(DeployError::NoCompiler(
            "this wisp is a runtime-only build: it cannot compile wasm. Compile the function \
             on a build machine with `wisp compile FILE.wasm --sign KEY` and upload the .cwasm \
             (this host must trust the key: --trusted-key); nothing was stored"
                .into(),
        ))
    }

    /// Compiles a component, or a core module (a preview-1 CGI function),
    /// whichever `wasm` is (blocking: run it on a blocking thread), and
    /// records the compile metrics. A WASI 0.3 component is compiled for
    /// the WASI 0.3 engine.
    #[cfg(feature = "cranelift")]
    fn compile_wasm(&self, wasm: &[u8]) -> Result<Compiled, DeployError> {
        let start = std::time::Instant::now();
        let compiled = if wasmparser::Parser::is_core_wasm(wasm) {
            Module::new(&self.engine, wasm).map(Compiled::Module)
        } else if uses_wasi_p3(wasm) {
            let services = self.services()?;
            Component::new(services.engine(), wasm).map(Compiled::Service)
        } else {
            Component::new(&self.engine, wasm).map(Compiled::Component)
        }
        .map_err(|e| DeployError::InvalidWasm(invalid_wasm_message(e)))?;
        crate::metrics::compiled(start.elapsed());
        Ok(compiled)
    }

    /// Loads a signed precompiled artifact: only once its signature
    /// verifies against a trusted key and its engine settings are this
    /// host's (wasmtime's loading of compiled code is safe for trusted
    /// input only).
    /// Returns the code too (what the store keeps: it is stored as signed).
    fn load_signed<'a>(&self, artifact: &'a [u8]) -> Result<(Compiled, &'a [u8]), DeployError> {
        let (header, code) = crate::function::signed::open(artifact, &self.config.trusted_keys)?;
        let (kind, settings) = match header.kind.as_str() {
            "component" | "module" => (EngineKind::Sync, self.compat_key.clone()),
            "service" => (EngineKind::Async, self.services_key()),
            other => {
                return Err(DeployError::InvalidWasm(format!(
                    "the precompiled artifact is of an unknown kind {other:?}"
                )));
            }
        };
        let engine = self.config.code_engine.name();
        // A runtime-only build cannot compute the settings key of a
        // compiler's (it has none): wasmtime's own check on loading the
        // code (version, target, flags, features) stands in for it.
        let settings_differ = cfg!(feature = "cranelift") && header.settings != settings;
        if header.engine != engine || settings_differ {
            return Err(DeployError::EngineMismatch(format!(
                "the precompiled artifact was compiled for target {}, engine {} and engine \
                 settings {}; this host runs engine {engine} with settings {settings} (its \
                 wasmtime build, target and limits): compile it again with `wisp compile` of \
                 this host's version and settings, or upload the .wasm; nothing was stored",
                header.target, header.engine, header.settings
            )));
        }
        // SAFETY: the code is signed by a key this host's operator trusts
        // (checked above, before anything else reads it), and was compiled
        // for this host's engine settings; wasmtime checks its header and
        // compatibility again.
        #[allow(unsafe_code)]
        let compiled = match (header.kind.as_str(), kind) {
            ("module", _) => {
                unsafe { Module::deserialize(&self.engine, code) }.map(Compiled::Module)
            }
            (_, EngineKind::Sync) => {
                unsafe { Component::deserialize(&self.engine, code) }.map(Compiled::Component)
            }
            (_, EngineKind::Async) => {
                let engine = self.services()?.engine();
                unsafe { Component::deserialize(engine, code) }.map(Compiled::Service)
            }
        };
        compiled.map(|c| (c, code)).map_err(|e| {
            DeployError::EngineMismatch(format!(
                "the precompiled code does not load on this host: {e:#}; nothing was stored"
            ))
        })
    }

    /// The key under which compiled code of `kind` is stored.
    pub fn key(&self, kind: EngineKind) -> String {
        match kind {
            EngineKind::Sync => self.compat_key.clone(),
            EngineKind::Async => self.services_key(),
        }
    }

    /// Maps compiled code from its file in the store (a component or a
    /// module: the file's header says which), for the engine of `kind`. Code
    /// pages are shared with the page cache and loaded as they are touched,
    /// not copied into the heap.
    pub fn load(&self, code: &CodeFile, kind: EngineKind) -> anyhow::Result<Compiled> {
        // The open file the store verified, not whatever has its name now.
        let path = code.path();
        let path = path.as_path();
        // SAFETY: the store hands out only a file whose contents match the
        // sha256 it recorded (in the store) when it wrote the output of
        // `serialize` of this host there (an engine with the same
        // compatibility key), so this is code this host compiled, never a
        // file planted in the data directory; wasmtime still checks the
        // header and engine compatibility. The store never changes such a
        // file in place (it writes a new one and renames it over), so the
        // mapping stays valid for as long as the code is used.
        #[allow(unsafe_code)]
        let compiled = (|| -> anyhow::Result<Compiled> {
            Ok(match (Engine::detect_precompiled_file(path)?, kind) {
                (Some(Precompiled::Module), EngineKind::Sync) => {
                    Compiled::Module(unsafe { Module::deserialize_file(&self.engine, path) }?)
                }
                (Some(Precompiled::Component), EngineKind::Sync) => {
                    Compiled::Component(unsafe { Component::deserialize_file(&self.engine, path) }?)
                }
                (Some(Precompiled::Component), EngineKind::Async) => {
                    let engine = self.services()?.engine();
                    Compiled::Service(unsafe { Component::deserialize_file(engine, path) }?)
                }
                _ => anyhow::bail!("not compiled code of this engine"),
            })
        })();
        compiled.with_context(|| format!("loading {}", code.name().display()))
    }

    /// Checks exports and imports and pre-instantiates.
    pub fn prepare(&self, compiled: &Compiled) -> Result<Prepared, DeployError> {
        match compiled {
            Compiled::Component(c) => self.prepare_component(c).map(Prepared::Component),
            Compiled::Service(c) => self.prepare_service(c).map(Prepared::Service),
            Compiled::Module(m) => prepare_module(&self.cgi_linker, m).map(Prepared::Module),
        }
    }

    fn prepare_component(&self, component: &Component) -> Result<ComponentPre, DeployError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports_http = exports.iter().any(|n| n.starts_with(INCOMING_HANDLER));
        let exports_events = exports.iter().any(|n| n.starts_with(EVENT_HANDLER));
        if !exports_http && !exports_events {
            return Err(DeployError::MissingExport(format!(
                "the component does not export wasi:http/incoming-handler@0.2.x (the WASI 0.2 \
                 wasi:http/proxy world), wasi:http/handler@0.3.x (the WASI 0.3 wasi:http/service \
                 world) nor wisp:function/event-handler@0.1.x; it exports: {}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            let missing = self.unsatisfied_imports(component);
            if missing.is_empty() {
                DeployError::UnsatisfiedImports(format!("{e:#}"))
            } else {
                DeployError::UnsatisfiedImports(format!(
                    "the component imports what this host does not provide: {}",
                    missing.join(", ")
                ))
            }
        })?;
        if let Some(name) = exports.iter().find(|n| n.starts_with(INCOMING_HANDLER)) {
            check_http_handler_type(&pre, name)?;
        }
        let http = exports_http
            .then(|| ProxyPre::new(pre.clone()))
            .transpose()
            .map_err(|e| DeployError::MissingExport(format!("{e:#}")))?;
        let events = exports_events
            .then(|| EventsPre::new(pre))
            .transpose()
            .map_err(|e| DeployError::MissingExport(format!("{e:#}")))?;
        Ok(ComponentPre { http, events })
    }

    /// A build without WASI 0.3 has no 0.3 engine to prepare one on.
    #[cfg(not(feature = "p3"))]
    fn prepare_service(
        &self,
        _component: &Component,
    ) -> Result<ServicePre<InvocationState>, DeployError> {
        match self.services()?.never {}
    }

    /// A WASI 0.3 component: it must export `wasi:http/handler@0.3.x`, and
    /// its imports be among what the WASI 0.3 engine's linker provides.
    #[cfg(feature = "p3")]
    fn prepare_service(
        &self,
        component: &Component,
    ) -> Result<ServicePre<InvocationState>, DeployError> {
        let services = self.services()?;
        let missing = unsatisfied_imports(&services.engine, component);
        if !missing.is_empty() {
            return Err(DeployError::UnsatisfiedImports(format!(
                "the component (WASI 0.3) imports what this host does not provide: {}",
                missing.join(", ")
            )));
        }
        let exports: Vec<String> = component
            .component_type()
            .exports(&services.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|n| n.starts_with(HANDLER_P3)) {
            return Err(DeployError::MissingExport(format!(
                "the component uses WASI 0.3 but does not export wasi:http/handler@0.3.x (the \
                 wasi:http/service world); it exports: {}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
        let pre = services.linker.instantiate_pre(component).map_err(|e| {
            let missing = unsatisfied_imports(&services.engine, component);
            if missing.is_empty() {
                DeployError::UnsatisfiedImports(format!("{e:#}"))
            } else {
                DeployError::UnsatisfiedImports(format!(
                    "the component imports what this host does not provide: {}",
                    missing.join(", ")
                ))
            }
        })?;
        ServicePre::new(pre).map_err(|e| {
            DeployError::MissingExport(format!(
                "the component's wasi:http/handler export does not match wasi:http 0.3 \
                 (handle: async func(request) -> result<response, error-code>): {e:#}"
            ))
        })
    }

    /// Names of the component's imports the linker cannot satisfy, found by
    /// trying each import alone.
    fn unsatisfied_imports(&self, component: &Component) -> Vec<String> {
        unsatisfied_imports(&self.engine, component)
    }
}

/// Names of `component`'s imports that are not among the interfaces the
/// host links.
fn unsatisfied_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| !provided_interface(name))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Whether a component uses WASI 0.3: it imports or exports a `wasi:`
/// interface at 0.3.x (read from its top-level import and export sections,
/// before compiling). Such a component needs the WASI 0.3 engine.
pub(crate) fn uses_wasi_p3(wasm: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    let is_p3 = |name: &str| {
        name.starts_with("wasi:")
            && name
                .split_once('@')
                .is_some_and(|(_, v)| v.starts_with("0.3."))
    };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { return false };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports.into_iter().flatten() {
                    if is_p3(import.name.0) {
                        return true;
                    }
                }
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports.into_iter().flatten() {
                    if is_p3(export.name.0) {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// A compile error as the deploy answers it. A component that uses
/// component-model async without a WASI 0.3 import or export cannot run
/// here: say so rather than what the validator says.
#[cfg(feature = "cranelift")]
fn invalid_wasm_message(e: wasmtime::Error) -> String {
    let message = format!("{e:#}");
    if message.contains("component model async") {
        format!(
            "{message} (this host runs components that use component-model async only as WASI \
             0.3 HTTP functions: exporting wasi:http/handler@0.3.x)"
        )
    } else {
        message
    }
}

/// Checks the type of the exported `handle`. `ProxyPre::new` only looks the
/// export up by name; its type is checked when an instance is loaded, so a
/// `handle` of another type was accepted at deploy and then failed every
/// request (found by the `upload` fuzz target's seeds). The same check as
/// the bindings' own, done once here.
fn check_http_handler_type(
    pre: &wasmtime::component::InstancePre<InvocationState>,
    export: &str,
) -> Result<(), DeployError> {
    use wasmtime::component::Resource;
    use wasmtime::component::types::ComponentItem;
    use wasmtime_wasi_http::p2::bindings::http::types::{IncomingRequest, ResponseOutparam};

    let component = pre.component();
    let handle = component
        .get_export_index(None, export)
        .and_then(|iface| component.get_export(Some(&iface), "handle"));
    let checked = match handle {
        Some((ComponentItem::ComponentFunc(f), _)) => f
            .typecheck::<(Resource<IncomingRequest>, Resource<ResponseOutparam>), ()>(
                &pre.instance_type(),
            ),
        Some(_) => Err(wasmtime::format_err!("`handle` is not a function")),
        None => Err(wasmtime::format_err!("it has no `handle` function")),
    };
    checked.map_err(|e| {
        DeployError::MissingExport(format!(
            "the component's wasi:http/incoming-handler export does not match wasi:http 0.2 \
             (handle: func(request: incoming-request, response-out: response-outparam)): {e:#}"
        ))
    })
}

/// Whether `name` (`pkg:ns/iface@version`) is among the interfaces linked:
/// the WASI 0.2 set and wasi:http 0.2 types and outgoing-handler; for WASI
/// 0.3 components also the 0.3 set and wasi:http 0.3 types and client.
fn provided_interface(name: &str) -> bool {
    let (path, version) = name.split_once('@').unwrap_or((name, ""));
    // Wisp's own capabilities (sdk/wit), at this package's 0.1.x.
    if version.starts_with("0.1.")
        && matches!(
            path,
            "wisp:function/kv"
                | "wisp:function/config"
                | "wisp:function/log"
                | "wisp:function/topics"
        )
    {
        return true;
    }
    if version.starts_with("0.3.") {
        return matches!(
            path.split_once('/').map(|(pkg, _)| pkg),
            Some("wasi:cli" | "wasi:clocks" | "wasi:filesystem" | "wasi:random" | "wasi:sockets")
        ) || matches!(path, "wasi:http/types" | "wasi:http/client");
    }
    if !version.starts_with("0.2.") {
        return false;
    }
    matches!(
        path.split_once('/').map(|(pkg, _)| pkg),
        Some(
            "wasi:cli"
                | "wasi:clocks"
                | "wasi:filesystem"
                | "wasi:io"
                | "wasi:random"
                | "wasi:sockets"
        )
    ) || matches!(path, "wasi:http/types" | "wasi:http/outgoing-handler")
}

/// Checks a compiled module (a `_start` command, WASI preview-1 imports
/// only) and pre-instantiates it.
fn prepare_module(
    linker: &Linker<CgiState>,
    module: &Module,
) -> Result<InstancePre<CgiState>, DeployError> {
    let foreign: Vec<String> = module
        .imports()
        .filter(|i| i.module() != WASI_P1)
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect();
    if !foreign.is_empty() {
        return Err(DeployError::UnsatisfiedImports(format!(
            "the module imports what this host does not provide (only {WASI_P1} is): {}",
            foreign.join(", ")
        )));
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(DeployError::MissingExport(
                "the module's `_start` export is not a function without parameters or results"
                    .into(),
            ));
        }
        None => {
            let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
            return Err(DeployError::MissingExport(format!(
                "the core module does not export `_start` (a wasm32-wasip1 command, run CGI-style); \
                 it exports: {}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(DeployError::MissingExport(
            "the core module does not export its `memory`, which WASI needs".into(),
        ));
    }
    linker.instantiate_pre(module).map_err(|e| {
        DeployError::UnsatisfiedImports(format!(
            "the module's {WASI_P1} imports do not match this host's: {e:#}"
        ))
    })
}

/// Cheap checks before compiling: wasm at all, and a component or a core
/// module (a preview-1 CGI function, checked further when compiled).
pub(crate) fn check_binary(wasm: &[u8]) -> Result<(), DeployError> {
    if crate::function::signed::is_signed_artifact(wasm) {
        return Ok(());
    }
    if wasm.starts_with(b"\x7fELF") {
        return Err(DeployError::InvalidWasm(
            "the upload is compiled code without Wisp's signature: a host loads precompiled \
             code only as a signed artifact (`wisp compile --sign`) from a key it trusts \
             (--trusted-key); upload the .wasm instead"
                .into(),
        ));
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(DeployError::InvalidWasm(
            "the upload is not a WebAssembly binary (no \\0asm header)".into(),
        ));
    }
    if wasmparser::Parser::is_core_wasm(wasm) {
        return Ok(());
    }
    if !wasmparser::Parser::is_component(wasm) {
        return Err(DeployError::InvalidWasm(
            "the upload has a WebAssembly header of an unknown version or layer".into(),
        ));
    }
    Ok(())
}

/// Compiled code of either kind of function.
pub(crate) enum Compiled {
    /// A WASI 0.2 component (`wasi:http/incoming-handler` and/or
    /// `wisp:function/event-handler`).
    Component(Component),
    /// A WASI 0.3 component (`wasi:http/handler@0.3`), compiled for the WASI
    /// 0.3 engine.
    Service(Component),
    /// A preview-1 core module, run CGI-style.
    Module(Module),
}

/// Compiled code as stored, and the engine it is for.
pub(crate) struct Serialized {
    pub bytes: Vec<u8>,
    pub kind: EngineKind,
}

impl Compiled {
    /// The engine the code was compiled for.
    pub fn engine_kind(&self) -> EngineKind {
        match self {
            Compiled::Service(_) => EngineKind::Async,
            Compiled::Component(_) | Compiled::Module(_) => EngineKind::Sync,
        }
    }

    /// The compiled code, for the store.
    #[cfg(feature = "cranelift")]
    pub fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Component(c) | Compiled::Service(c) => c.serialize(),
            Compiled::Module(m) => m.serialize(),
        }
    }
}

impl WispEngine {
    /// Compiles `wasm`, or loads it if it is signed precompiled code, and
    /// returns the code for the store too. Blocking.
    pub fn compile_serialized(&self, wasm: &[u8]) -> Result<(Compiled, Serialized), DeployError> {
        let (compiled, bytes) = if crate::function::signed::is_signed_artifact(wasm) {
            // The signed code itself is what the store keeps.
            let (compiled, code) = self.load_signed(wasm)?;
            (compiled, code.to_vec())
        } else {
            let compiled = self.compile_wasm(wasm)?;
            let bytes = self.serialize(&compiled)?;
            (compiled, bytes)
        };
        let kind = compiled.engine_kind();
        Ok((compiled, Serialized { bytes, kind }))
    }

    #[cfg(feature = "cranelift")]
    fn serialize(&self, compiled: &Compiled) -> Result<Vec<u8>, DeployError> {
        compiled
            .serialize()
            .map_err(|e| DeployError::Internal(format!("serializing compiled code: {e:#}")))
    }

    #[cfg(not(feature = "cranelift"))]
    fn serialize(&self, _compiled: &Compiled) -> Result<Vec<u8>, DeployError> {
        unreachable!("a runtime-only build compiles nothing (`compile` refused it)")
    }

    /// Compile + serialize + prepare, for deploy. Blocking.
    pub fn compile_new(&self, wasm: &[u8]) -> Result<(Prepared, Serialized), DeployError> {
        let (compiled, serialized) = self.compile_serialized(wasm)?;
        let prepared = self.prepare(&compiled)?;
        Ok((prepared, serialized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_checks() {
        assert!(matches!(
            check_binary(b"hello world"),
            Err(DeployError::InvalidWasm(_))
        ));
        // A core module passes (preview-1, checked for `_start` later).
        assert!(check_binary(b"\0asm\x01\0\0\0").is_ok());
        assert!(check_binary(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn knows_the_wasi_set() {
        assert!(provided_interface("wasi:cli/environment@0.2.0"));
        assert!(provided_interface("wasi:io/streams@0.2.6"));
        assert!(provided_interface("wasi:http/types@0.2.3"));
        // WASI 0.3: its set (no wasi:io), wasi:http types and client.
        assert!(provided_interface("wasi:http/types@0.3.0"));
        assert!(provided_interface("wasi:http/client@0.3.2"));
        assert!(provided_interface("wasi:clocks/monotonic-clock@0.3.0"));
        assert!(!provided_interface("wasi:io/streams@0.3.0"));
        assert!(!provided_interface("wasi:http/handler@0.3.0"));
        assert!(!provided_interface("acme:unknown/frobnicate@1.0.0"));
        assert!(!provided_interface("wasi:keyvalue/store@0.2.0-draft"));
    }

    /// Seeds of the `upload` fuzz target (tests/fuzz/seeds).
    const HTTP_COMPONENT: &[u8] =
        include_bytes!("../../../tests/fuzz/corpus/upload/component-http");
    const MISTYPED_HANDLER: &[u8] =
        include_bytes!("../../../tests/fuzz/corpus/upload/component-mistyped-handler");

    fn engine() -> WispEngine {
        let config = crate::HostConfig {
            pooling: false,
            ..crate::HostConfig::default()
        };
        WispEngine::new(&config).unwrap()
    }

    #[test]
    fn refuses_an_http_handler_of_the_wrong_type() {
        let engine = engine();
        // `handle: func()` instead of func(incoming-request, response-outparam):
        // accepted before, then every request failed.
        let compiled = engine.compile_wasm(MISTYPED_HANDLER).unwrap();
        match engine.prepare(&compiled) {
            Err(crate::DeployError::MissingExport(m)) => {
                assert!(m.contains("incoming-handler"), "{m}");
                assert!(m.contains("handle"), "{m}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a mistyped handler was accepted"),
        }
        // The right type passes.
        let compiled = engine.compile_wasm(HTTP_COMPONENT).unwrap();
        let prepared = engine
            .prepare(&compiled)
            .map_err(|e| e.to_string())
            .unwrap();
        assert!(matches!(
            prepared,
            super::Prepared::Component(super::ComponentPre { http: Some(_), .. })
        ));
    }
}
