// placeholder, replaced by the CPU reference
namespace mla::reference {}
