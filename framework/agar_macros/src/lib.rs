//! The `#[vm_test]` attribute: one async test function, many registered tests, one per
//! cell of a backend x firmware x storage x guest OS matrix.
//!
//! # Grammar
//!
//! ```text
//! #[vm_test(item, item, ...)]
//! item     := cell
//!           | ignore(reason = "...")            | ignore(reason = "...", cell, ...)
//!           | unstable(reason = "...")          | unstable(reason = "...", cell, ...)
//!           | requires(capability, ...)         kvm, smp, nic, gfx, pvpanic
//!           | artifacts(artifact_id, ...)       extra artifacts the body uses
//!           | timeout = SECONDS                 the watchdog (default 300)
//! cell     := [agarvmm_ | qemu_] boot           no prefix: one cell per backend
//! boot     := linux_direct(kernel_os)
//!           | pcat(ide(disk_os))
//!           | uefi(ide(disk_os)) | uefi(vmbus(disk_os))
//!           | igvm(linux_direct(kernel_os))     an IGVM file that loads Linux itself
//!           | openhcl(uefi(..)) | openhcl(pcat(..))   OpenHCL in VTL2 hosting the firmware
//! kernel_os := debian12_k61 | debian12_k612     disk_os := debian12
//! ```
//!
//! The function must be `async fn name(vm: agar::VmBuilder) -> anyhow::Result<()>`. Each
//! cell registers a test named `{backend}_{firmware}_{storage}_{os}::{name}`. Invalid
//! combinations are compile errors that say what to write instead.
//!
//! # Architecture
//!
//! The attribute is parsed as a comma-separated list of Rust expressions (calls, paths and
//! assignments), validated into [`Cell`] values, and expanded into the original function
//! plus one `static TestDef` in the `agar::__private::TESTS` linkme slice.

use std::collections::BTreeSet;

use proc_macro::TokenStream;
use proc_macro2::Span;
use proc_macro2::TokenStream as TokenStream2;
use quote::format_ident;
use quote::quote;
use syn::Expr;
use syn::ExprCall;
use syn::ItemFn;
use syn::Lit;
use syn::Token;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;

type Result<T> = std::result::Result<T, syn::Error>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    AgarVmm,
    Qemu,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Paravisor {
    Igvm,
    OpenHcl,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Firmware {
    LinuxDirect,
    Pcat,
    Uefi,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Storage {
    Ide,
    Vmbus,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Os {
    Debian12,
    Debian12K61,
    Debian12K612,
}

const KERNEL_OSES: &str = "debian12_k61 or debian12_k612";
const DISK_OSES: &str = "debian12";
const CAPABILITIES: [&str; 5] = ["kvm", "smp", "nic", "gfx", "pvpanic"];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    backend: Backend,
    paravisor: Option<Paravisor>,
    firmware: Firmware,
    storage: Option<Storage>,
    os: Os,
}

impl Cell {
    fn name(&self) -> String {
        let mut parts = vec![match self.backend {
            Backend::AgarVmm => "agarvmm",
            Backend::Qemu => "qemu",
        }];
        match self.paravisor {
            Some(Paravisor::Igvm) => parts.push("igvm"),
            Some(Paravisor::OpenHcl) => parts.push("openhcl"),
            None => {}
        }
        parts.push(match self.firmware {
            Firmware::LinuxDirect => "linux_direct",
            Firmware::Pcat => "pcat",
            Firmware::Uefi => "uefi",
        });
        match self.storage {
            Some(Storage::Ide) => parts.push("ide"),
            Some(Storage::Vmbus) => parts.push("vmbus"),
            None => {}
        }
        parts.push(match self.os {
            Os::Debian12 => "debian12",
            Os::Debian12K61 => "debian12_k61",
            Os::Debian12K612 => "debian12_k612",
        });
        parts.join("_")
    }

    fn tokens(&self) -> TokenStream2 {
        let p = quote!(::agar::__private);
        let backend = match self.backend {
            Backend::AgarVmm => quote!(#p::BackendKind::AgarVmm),
            Backend::Qemu => quote!(#p::BackendKind::Qemu),
        };
        let paravisor = match self.paravisor {
            None => quote!(::core::option::Option::None),
            Some(Paravisor::Igvm) => quote!(::core::option::Option::Some(#p::Paravisor::Igvm)),
            Some(Paravisor::OpenHcl) => {
                quote!(::core::option::Option::Some(#p::Paravisor::OpenHcl))
            }
        };
        let firmware = match self.firmware {
            Firmware::LinuxDirect => quote!(#p::Firmware::LinuxDirect),
            Firmware::Pcat => quote!(#p::Firmware::Pcat),
            Firmware::Uefi => quote!(#p::Firmware::Uefi),
        };
        let storage = match self.storage {
            None => quote!(::core::option::Option::None),
            Some(Storage::Ide) => quote!(::core::option::Option::Some(#p::Storage::Ide)),
            Some(Storage::Vmbus) => quote!(::core::option::Option::Some(#p::Storage::Vmbus)),
        };
        let os = match self.os {
            Os::Debian12 => quote!(#p::GuestOs::Debian12),
            Os::Debian12K61 => quote!(#p::GuestOs::Debian12K61),
            Os::Debian12K612 => quote!(#p::GuestOs::Debian12K612),
        };
        quote!(#p::Cell { backend: #backend, paravisor: #paravisor, firmware: #firmware, storage: #storage, os: #os })
    }
}

struct CellEntry {
    cell: Cell,
    ignore: Option<String>,
    unstable: Option<String>,
}

#[derive(Default)]
struct Attr {
    cells: Vec<CellEntry>,
    ignore: Option<String>,
    unstable: Option<String>,
    requires: Vec<String>,
    artifacts: Vec<(String, Span)>,
    timeout: Option<u64>,
    fixture: bool,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> Result<T> {
    Err(syn::Error::new(span, msg))
}

/// The single identifier of a call's function or of a path expression.
fn ident_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
        Expr::Call(c) => ident_of(&c.func),
        _ => None,
    }
}

fn single_arg(call: &ExprCall, what: &str, example: &str) -> Result<Expr> {
    if call.args.len() != 1 {
        return err(
            call.span(),
            format!("{what} takes one argument, e.g. {example}"),
        );
    }
    Ok(call.args[0].clone())
}

fn parse_os(e: &Expr, for_kernel: bool) -> Result<Os> {
    let Some(name) = ident_of(e).filter(|_| matches!(e, Expr::Path(_))) else {
        let hint = if for_kernel {
            "linux_direct boots a kernel and initrd, not a disk: write linux_direct(debian12_k61) \
             or linux_direct(debian12_k612)"
                .to_string()
        } else {
            format!("expected a guest OS image: {DISK_OSES}")
        };
        return err(e.span(), hint);
    };
    let os = match name.as_str() {
        "debian12" => Os::Debian12,
        "debian12_k61" => Os::Debian12K61,
        "debian12_k612" => Os::Debian12K612,
        _ => {
            return err(
                e.span(),
                format!(
                    "unknown guest OS `{name}`; kernels for linux_direct: {KERNEL_OSES}; disk images: {DISK_OSES}"
                ),
            );
        }
    };
    match (for_kernel, os) {
        (true, Os::Debian12) => err(
            e.span(),
            format!(
                "linux_direct needs a kernel and initrd, `debian12` is a disk image: use {KERNEL_OSES}"
            ),
        ),
        (false, Os::Debian12K61 | Os::Debian12K612) => err(
            e.span(),
            format!(
                "`{name}` is a kernel and initrd for linux_direct(...); firmware boots a disk image: {DISK_OSES}"
            ),
        ),
        _ => Ok(os),
    }
}

fn parse_storage(e: &Expr, firmware: Firmware) -> Result<(Storage, Os)> {
    let fw = match firmware {
        Firmware::Pcat => "pcat",
        _ => "uefi",
    };
    let Expr::Call(call) = e else {
        return err(
            e.span(),
            format!("{fw} boots from a disk on a controller: write {fw}(ide({DISK_OSES}))"),
        );
    };
    let storage = match ident_of(e).as_deref() {
        Some("ide") => Storage::Ide,
        Some("vmbus") => Storage::Vmbus,
        _ => {
            return err(
                call.func.span(),
                "expected a storage controller: ide(...) or vmbus(...)",
            );
        }
    };
    if firmware == Firmware::Pcat && storage == Storage::Vmbus {
        return err(
            call.func.span(),
            "PCAT (BIOS) cannot boot from VMBus SCSI: use pcat(ide(...)) or uefi(vmbus(...))",
        );
    }
    let os = parse_os(
        &single_arg(call, "a storage controller", "ide(debian12)")?,
        false,
    )?;
    Ok((storage, os))
}

/// Parses `[backend_]boot(...)` into the cells it stands for.
fn parse_cell(e: &Expr) -> Result<Vec<Cell>> {
    let Expr::Call(call) = e else {
        return err(
            e.span(),
            "expected a matrix cell such as linux_direct(debian12_k61) or pcat(ide(debian12))",
        );
    };
    let Some(name) = ident_of(e) else {
        return err(call.func.span(), "expected a firmware name");
    };
    let (backends, fw_name): (Vec<Backend>, &str) = if let Some(r) = name.strip_prefix("agarvmm_") {
        (vec![Backend::AgarVmm], r)
    } else if let Some(r) = name.strip_prefix("qemu_") {
        (vec![Backend::Qemu], r)
    } else {
        (vec![Backend::AgarVmm, Backend::Qemu], name.as_str())
    };
    let explicit = backends.len() == 1;
    let arg = single_arg(call, &format!("`{fw_name}`"), "linux_direct(debian12_k61)")?;
    let (paravisor, firmware, storage, os) = match fw_name {
        "linux_direct" => (None, Firmware::LinuxDirect, None, parse_os(&arg, true)?),
        "pcat" | "uefi" => {
            let fw = if fw_name == "pcat" {
                Firmware::Pcat
            } else {
                Firmware::Uefi
            };
            let (s, os) = parse_storage(&arg, fw)?;
            (None, fw, Some(s), os)
        }
        "igvm" => {
            if ident_of(&arg).as_deref() != Some("linux_direct") {
                return err(
                    arg.span(),
                    "igvm(...) wraps linux_direct(...): the IGVM file loads the guest itself; \
                     for firmware guests use openhcl(uefi(...)) or openhcl(pcat(...))",
                );
            }
            let Expr::Call(inner) = &arg else {
                return err(arg.span(), "expected linux_direct(...)");
            };
            let os = parse_os(
                &single_arg(inner, "linux_direct", "linux_direct(debian12_k61)")?,
                true,
            )?;
            (Some(Paravisor::Igvm), Firmware::LinuxDirect, None, os)
        }
        "openhcl" => {
            let inner_name = ident_of(&arg).unwrap_or_default();
            let fw = match inner_name.as_str() {
                "uefi" => Firmware::Uefi,
                "pcat" => Firmware::Pcat,
                "linux_direct" => {
                    return err(
                        arg.span(),
                        "openhcl(...) hosts firmware; for OpenHCL Linux direct write igvm(linux_direct(...))",
                    );
                }
                _ => return err(arg.span(), "openhcl(...) wraps uefi(...) or pcat(...)"),
            };
            let Expr::Call(inner) = &arg else {
                return err(arg.span(), "expected uefi(...) or pcat(...)");
            };
            let (s, os) = parse_storage(
                &single_arg(inner, &inner_name, "uefi(vmbus(debian12))")?,
                fw,
            )?;
            (Some(Paravisor::OpenHcl), fw, Some(s), os)
        }
        other => {
            return err(
                call.func.span(),
                format!(
                    "unknown firmware `{other}`; expected linux_direct, pcat, uefi, igvm or openhcl, \
                     optionally prefixed with agarvmm_ or qemu_"
                ),
            );
        }
    };
    let cells: Vec<Cell> = backends
        .into_iter()
        .map(|backend| Cell {
            backend,
            paravisor,
            firmware,
            storage,
            os,
        })
        .collect();
    if explicit {
        let c = &cells[0];
        if c.backend == Backend::Qemu && c.paravisor.is_some() {
            return err(
                call.func.span(),
                "QEMU cannot load IGVM files or run VTL2: drop the qemu_ prefix",
            );
        }
        if c.backend == Backend::Qemu && c.storage == Some(Storage::Vmbus) {
            return err(
                call.func.span(),
                "QEMU has no VMBus SCSI controller: drop the qemu_ prefix or use ide(...)",
            );
        }
        if c.backend == Backend::AgarVmm
            && c.firmware == Firmware::Uefi
            && c.storage == Some(Storage::Ide)
        {
            return err(
                call.func.span(),
                "agar-vmm attaches IDE only to PCAT guests (--ide requires --pcat): use pcat(ide(...)) or uefi(vmbus(...))",
            );
        }
    }
    Ok(cells)
}

fn parse_reason(e: &Expr, what: &str) -> Result<Option<String>> {
    let Expr::Assign(a) = e else {
        return Ok(None);
    };
    if ident_of(&a.left).as_deref() != Some("reason") {
        return Ok(None);
    }
    match &*a.right {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) if s.value().trim().is_empty() => {
            err(s.span(), format!("{what} needs a non-empty reason"))
        }
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(Some(s.value())),
        other => err(
            other.span(),
            format!("{what}(reason = \"...\"): the reason is a string literal"),
        ),
    }
}

fn parse_attr(args: Punctuated<Expr, Token![,]>) -> Result<Attr> {
    let mut attr = Attr::default();
    for item in args {
        match &item {
            Expr::Path(_) if ident_of(&item).as_deref() == Some("fixture") => attr.fixture = true,
            Expr::Assign(a) if ident_of(&a.left).as_deref() == Some("timeout") => {
                let secs = match &*a.right {
                    Expr::Lit(l) => match &l.lit {
                        Lit::Int(i) => i.base10_parse::<u64>()?,
                        _ => return err(a.right.span(), "timeout = SECONDS (an integer)"),
                    },
                    _ => return err(a.right.span(), "timeout = SECONDS (an integer)"),
                };
                if secs == 0 {
                    return err(a.right.span(), "timeout must be at least one second");
                }
                attr.timeout = Some(secs);
            }
            Expr::Call(call) => match ident_of(&item).as_deref() {
                Some(kind @ ("ignore" | "unstable")) => {
                    let mut args = call.args.iter();
                    let reason = match args.next() {
                        Some(first) => parse_reason(first, kind)?,
                        None => None,
                    };
                    let Some(reason) = reason else {
                        return err(
                            call.span(),
                            format!("{kind} needs a reason: {kind}(reason = \"...\")"),
                        );
                    };
                    let rest: Vec<&Expr> = args.collect();
                    if rest.is_empty() {
                        let slot = if kind == "ignore" {
                            &mut attr.ignore
                        } else {
                            &mut attr.unstable
                        };
                        if slot.is_some() {
                            return err(
                                call.span(),
                                format!("{kind}(...) given twice for the whole test"),
                            );
                        }
                        *slot = Some(reason);
                    } else {
                        for e in rest {
                            for cell in parse_cell(e)? {
                                let (ignore, unstable) = if kind == "ignore" {
                                    (Some(reason.clone()), None)
                                } else {
                                    (None, Some(reason.clone()))
                                };
                                attr.cells.push(CellEntry {
                                    cell,
                                    ignore,
                                    unstable,
                                });
                            }
                        }
                    }
                }
                Some("requires") => {
                    for a in &call.args {
                        let name = ident_of(a).filter(|_| matches!(a, Expr::Path(_)));
                        match name {
                            Some(n) if CAPABILITIES.contains(&n.as_str()) => attr.requires.push(n),
                            _ => {
                                return err(
                                    a.span(),
                                    format!(
                                        "unknown capability; known: {}",
                                        CAPABILITIES.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
                Some("artifacts") => {
                    for a in &call.args {
                        match a {
                            Expr::Path(p) if !p.path.segments.is_empty() => {
                                let ident = &p.path.segments[p.path.segments.len() - 1].ident;
                                attr.artifacts
                                    .push((ident.to_string().to_lowercase(), ident.span()));
                            }
                            _ => {
                                return err(
                                    a.span(),
                                    "artifacts(...) takes artifact ids as artifacts::ids names them, e.g. SEABIOS_BIOS",
                                );
                            }
                        }
                    }
                }
                _ => {
                    for cell in parse_cell(&item)? {
                        attr.cells.push(CellEntry {
                            cell,
                            ignore: None,
                            unstable: None,
                        });
                    }
                }
            },
            _ => {
                return err(
                    item.span(),
                    "expected a matrix cell such as linux_direct(debian12_k61), or ignore/unstable/requires/artifacts/timeout",
                );
            }
        }
    }
    if attr.cells.is_empty() {
        return err(
            Span::call_site(),
            "#[vm_test] needs at least one matrix cell, e.g. #[vm_test(linux_direct(debian12_k61))]",
        );
    }
    let mut seen = BTreeSet::new();
    for c in &attr.cells {
        if !seen.insert(c.cell) {
            return err(
                Span::call_site(),
                format!("cell `{}` is listed twice", c.cell.name()),
            );
        }
    }
    Ok(attr)
}

fn check_signature(f: &ItemFn) -> Result<()> {
    let expected =
        "#[vm_test] functions are `async fn name(vm: agar::VmBuilder) -> anyhow::Result<()>`";
    if f.sig.asyncness.is_none() {
        return err(f.sig.fn_token.span, expected);
    }
    if f.sig.inputs.len() != 1 || !f.sig.generics.params.is_empty() {
        return err(f.sig.inputs.span(), expected);
    }
    Ok(())
}

fn expand(attr: TokenStream2, item: TokenStream2) -> Result<TokenStream2> {
    let func: ItemFn = syn::parse2(item)?;
    check_signature(&func)?;
    let args = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(attr)?;
    let attr = parse_attr(args)?;
    let p = quote!(::agar::__private);
    let opt = |s: &Option<String>| match s {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    let cells = attr.cells.iter().map(|c| {
        let cell = c.cell.tokens();
        let ignore = opt(&c.ignore);
        let unstable = opt(&c.unstable);
        quote!(#p::CellDef { cell: #cell, ignore: #ignore, unstable: #unstable })
    });
    let requires = attr.requires.iter().map(|r| {
        let v = format_ident!("{}", {
            let mut c = r.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        });
        quote!(#p::Capability::#v)
    });
    let artifacts = attr.artifacts.iter().map(|(a, _)| a);
    // Each id must exist in the artifacts crate: a typo is a compile error there.
    let artifact_checks = attr.artifacts.iter().map(|(a, span)| {
        let c = syn::Ident::new(&a.to_uppercase(), *span);
        quote!(let _ = #p::artifacts::ids::#c;)
    });
    let ignore = opt(&attr.ignore);
    let unstable = opt(&attr.unstable);
    let timeout = match attr.timeout {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let fixture = attr.fixture;
    let name = &func.sig.ident;
    let name_str = name.to_string();
    let stat = format_ident!("__AGAR_VM_TEST_{}", name_str.to_uppercase());
    Ok(quote! {
        #func

        const _: () = { #(#artifact_checks)* };

        #[#p::linkme::distributed_slice(#p::TESTS)]
        #[linkme(crate = #p::linkme)]
        #[doc(hidden)]
        static #stat: #p::TestDef = #p::TestDef {
            name: #name_str,
            module: ::core::module_path!(),
            file: ::core::file!(),
            line: ::core::line!(),
            cells: &[#(#cells),*],
            ignore: #ignore,
            unstable: #unstable,
            requires: &[#(#requires),*],
            artifacts: &[#(#artifacts),*],
            timeout_secs: #timeout,
            fixture: #fixture,
            run: |vm| -> #p::TestFuture { ::std::boxed::Box::pin(#name(vm)) },
        };
    })
}

/// Declares a VM test over a matrix of cells; see the crate documentation for the grammar.
#[proc_macro_attribute]
pub fn vm_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
