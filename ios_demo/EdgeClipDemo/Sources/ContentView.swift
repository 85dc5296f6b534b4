import EdgeClipCore
import PhotosUI
import SwiftUI

/// Pick or take a photo, type labels, see the top-5 with scores and latency; or run the golden
/// self-check. Launched with -benchmark, it runs the benchmark mode instead (README).
struct ContentView: View {
    @StateObject private var model = ClipModel()
    @State private var photoItem: PhotosPickerItem?
    @State private var showCamera = false
    @State private var labels = "dog, cat, car, bird, tree, person, food, building"

    var body: some View {
        NavigationStack {
            Form {
                Section("Model") {
                    Picker("Export", selection: $model.selected) {
                        ForEach(model.exports, id: \.self) { name in
                            Text(name).tag(name)
                        }
                    }
                    Picker("Compute units", selection: $model.computeUnits) {
                        ForEach(ComputeUnitSetting.allCases) { unit in
                            Text(unit.rawValue).tag(unit)
                        }
                    }
                    Text(model.status).font(.footnote)
                }
                Section("Photo") {
                    PhotosPicker("Pick photo", selection: $photoItem, matching: .images)
                    Button("Camera") { showCamera = true }
                        .disabled(!UIImagePickerController.isSourceTypeAvailable(.camera))
                    if let photo = model.photo {
                        Image(uiImage: photo).resizable().scaledToFit().frame(maxHeight: 240)
                    }
                }
                Section("Labels") {
                    TextField("labels, comma-separated", text: $labels)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                    Button("Classify") { model.classify(labels: labels) }
                    Button("Golden self-check") { model.goldenCheck() }
                }
                Section("Result") {
                    Text(model.result)
                        .font(.system(.footnote, design: .monospaced))
                        .textSelection(.enabled)
                }
            }
            .navigationTitle("EdgeClip")
        }
        .onChange(of: photoItem) { _, item in
            guard let item else { return }
            Task {
                if let data = try? await item.loadTransferable(type: Data.self), let image = UIImage(data: data) {
                    model.setPhoto(image)
                }
            }
        }
        .onChange(of: model.selected) { _, _ in model.load() }
        .onChange(of: model.computeUnits) { _, _ in model.load() }
        .sheet(isPresented: $showCamera) {
            CameraPicker { image in model.setPhoto(image) }
        }
        .onAppear { model.start() }
    }
}
